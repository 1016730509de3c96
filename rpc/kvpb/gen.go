// Package kvpb holds the generated protobuf and gRPC code of the node-to-node
// protocol (kvstore_peer.proto). Do not edit the *.pb.go files by hand.
//
// Regenerate with `go generate ./rpc/...`; it needs protoc (Debian:
// protobuf-compiler) and the plugins:
//
//	go install google.golang.org/protobuf/cmd/protoc-gen-go
//	go install google.golang.org/grpc/cmd/protoc-gen-go-grpc
package kvpb

//go:generate protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative kvstore_peer.proto kvstore_client.proto
