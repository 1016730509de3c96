// Package kvpb holds the generated protobuf and gRPC code of the node-to-node
// protocol (kvstore_peer.proto). Do not edit the *.pb.go files by hand.
//
// Regenerate with `go generate ./rpc/...`; it needs protoc (Debian:
// protobuf-compiler, 3.21.12) and the plugins at the versions named in the
// generated files' headers (each is its own module, so give the version;
// two commands, as go install takes one module at a time):
//
//	go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
//	go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
//
// With these the output is byte for byte the committed *.pb.go.
package kvpb

//go:generate protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative kvstore_peer.proto kvstore_client.proto
