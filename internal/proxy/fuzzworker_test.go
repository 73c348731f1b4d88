//go:build unix

package proxy_test

import (
	"os"
	"os/exec"
	"slices"
	"strconv"
	"syscall"
	"testing"
)

// Fuzzing in this package (go test -fuzz) runs each fuzz worker as a process of its own, with a
// test cluster of its own (TestMain). The coordinator kills a worker that does not stop within
// 2 s of being told to (one slow input, then the proxy's and the cluster's shutdown are enough),
// so a worker's cluster must not depend on the worker's cleanup:
//
//   - The worker's pipes to the coordinator (fds 3 and 4; 5 is the shared memory) would be
//     inherited by every process the worker starts, PostgreSQL's servers included; after a kill
//     those servers keep the pipes open and the coordinator waits for their end forever. They
//     are made close-on-exec here, in init, before TestMain starts the cluster.
//   - A watchdog process (watchFuzzWorker) stops the worker's cluster and removes its directory
//     once the worker is gone; after a clean exit there is nothing left to do.

func init() {
	if isFuzzWorker() {
		for fd := 3; fd <= 5; fd++ {
			syscall.CloseOnExec(fd)
		}
	}
}

// isFuzzWorker reports whether this process is a fuzz worker (the coordinator starts them with
// -test.fuzzworker first).
func isFuzzWorker() bool { return slices.Contains(os.Args[1:], "-test.fuzzworker") }

// fuzzWatchdog waits for the worker ($1) to end, then shuts the servers of its cluster ($2) down
// (SIGQUIT: immediate), waits for them and removes the directory.
const fuzzWatchdog = `while kill -0 "$1" 2>/dev/null; do sleep 1; done
for pf in "$2"/*/postmaster.pid; do
	[ -f "$pf" ] || continue
	pid=$(head -n 1 "$pf")
	kill -QUIT "$pid" 2>/dev/null
	while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
done
rm -rf "$2"`

// watchFuzzWorker starts the watchdog of this worker's cluster (see above); outside a fuzz
// worker it does nothing. The watchdog has a process group of its own, so that an interrupt
// from the terminal leaves it to clean up.
func watchFuzzWorker(f *testing.F) {
	if !isFuzzWorker() || cluster == nil {
		return
	}
	cmd := exec.Command("/bin/sh", "-c", fuzzWatchdog, "pgtide-fuzz-watchdog", strconv.Itoa(os.Getpid()), cluster.Dir())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Logf("no watchdog for the fuzz worker's cluster: %v", err)
		return
	}
	cmd.Process.Release()
}
