package loader

// The XDP program is compiled ahead of time; the outputs (flowsensor_bpfel.go/.o,
// flowsensor_bpfeb.go/.o, and likewise timerprobe_*) are committed so `go build`
// needs no clang. CI regenerates them and fails on drift. -mcpu=v3 needs kernel >= 5.1.
//go:generate go tool bpf2go -tags linux -target bpfel,bpfeb -type fs_record -type fs_counter flowsensor ../bpf/flowsensor.c -- -I../bpf -I/usr/include/x86_64-linux-gnu -O2 -g -Wall -Werror -mcpu=v3
//go:generate go tool bpf2go -tags linux -target bpfel,bpfeb timerProbe ../bpf/timer_probe.c -- -I../bpf -I/usr/include/x86_64-linux-gnu -O2 -g -Wall -Werror -mcpu=v3
