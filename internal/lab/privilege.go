// Package lab holds what the privileged tests share: the privilege check and
// network namespaces with veth pairs that a test creates and removes itself.
// Only tests import it.
package lab

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// RequireEnv makes privileged tests fail instead of skip (set by .ci/run),
// so a CI run can never pass by skipping the kernel layers.
const RequireEnv = "FLOWSENSOR_REQUIRE_PRIVILEGED"

// RequirePrivileged skips the test with a clear message when the process
// cannot load BPF programs or manage network namespaces, unless RequireEnv is
// set, in which case it fails.
func RequirePrivileged(tb testing.TB) {
	tb.Helper()
	if Privileged() {
		return
	}
	msg := "needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_PERFMON): run `sudo make test`"
	if os.Getenv(RequireEnv) != "" {
		tb.Fatalf("%s is set but this process is not privileged: %s", RequireEnv, msg)
	}
	tb.Skip(msg)
}

// Privileged reports whether the process has the capabilities the kernel
// layers of the tests need.
func Privileged() bool {
	var hdr = unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	has := func(c uint) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	return has(unix.CAP_SYS_ADMIN) && has(unix.CAP_NET_ADMIN) && has(unix.CAP_BPF) && has(unix.CAP_PERFMON)
}
