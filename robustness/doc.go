// Package robustness runs KVStore under random faults and checks what
// clients saw, in the style of Jepsen and etcd's robustness tests: a nemesis
// (robustness/nemesis) plays a seeded fault schedule while concurrent
// clients (robustness/workload) spread over every node read, write and
// delete a small key space; every operation is recorded with its call and
// return times and the history is checked for linearizability (Porcupine,
// robustness/linearizability) and, after healing, for durability.
//
// The suite itself lives in robustness_test.go; gaps.go holds the checks
// of how long the cluster went without acknowledging a write.
package robustness
