// The lab's own test workload: no dependencies.
module k8sha.lab/build/hello

go 1.26.0
