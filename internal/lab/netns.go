package lab

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
)

// Netns is a named network namespace a test created; it is deleted (with
// every interface inside) when the test ends.
type Netns struct {
	Name string
}

// NewNetns creates /run/netns/<name>. name must be unique on the machine;
// use Unique to build one.
func NewNetns(tb testing.TB, name string) *Netns {
	tb.Helper()
	// A namespace left by a crashed run of the same test would make ip fail.
	_ = exec.Command("ip", "netns", "del", name).Run()
	Run(tb, "ip", "netns", "add", name)
	tb.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			tb.Errorf("delete netns %s: %v: %s", name, err, out)
		}
	})
	n := &Netns{Name: name}
	// Loopback up, and no IPv6 autoconfiguration chatter (ND, MLD) on the
	// test links: the tests count packets exactly.
	n.Run(tb, "ip", "link", "set", "lo", "up")
	n.Run(tb, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	return n
}

// Unique returns a short name unique to this process, for namespaces and
// interfaces (interface names are limited to 15 bytes).
func Unique(prefix string) string {
	return fmt.Sprintf("%s%d", prefix, os.Getpid()%100000)
}

// Path is the namespace's bind-mount path, for nsenter --net=.
func (n *Netns) Path() string { return "/run/netns/" + n.Name }

// Command returns cmd prepared to run inside the namespace. nsenter enters
// only the network namespace; `ip netns exec` would also remount /sys and
// hide /sys/fs/bpf, where the sensor pins its maps.
func (n *Netns) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=" + n.Path(), "--", name}, args...)...)
}

// Run runs a command inside the namespace and fails the test on error.
func (n *Netns) Run(tb testing.TB, name string, args ...string) string {
	tb.Helper()
	return run(tb, n.Command(name, args...))
}

// Do runs fn with the calling goroutine's thread inside the namespace.
// Sockets opened in fn stay in the namespace after Do returns.
func (n *Netns) Do(tb testing.TB, fn func()) {
	tb.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		tb.Fatal(err)
	}
	defer orig.Close()
	target, err := netns.GetFromName(n.Name)
	if err != nil {
		runtime.UnlockOSThread()
		tb.Fatal(err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		tb.Fatal(err)
	}
	defer func() {
		// A thread that cannot go back stays locked, so the runtime discards it.
		if err := netns.Set(orig); err == nil {
			runtime.UnlockOSThread()
		}
	}()
	fn()
}

// Run runs a command in the test's own namespace and fails the test on error.
func Run(tb testing.TB, name string, args ...string) string {
	tb.Helper()
	return run(tb, exec.Command(name, args...))
}

func run(tb testing.TB, cmd *exec.Cmd) string {
	tb.Helper()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		tb.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out.String())
	}
	return out.String()
}

// Veth creates a veth pair with one end in each namespace, both up.
func Veth(tb testing.TB, a *Netns, aName string, b *Netns, bName string) {
	tb.Helper()
	a.Run(tb, "ip", "link", "add", aName, "type", "veth", "peer", "name", bName, "netns", b.Name)
	a.Run(tb, "ip", "link", "set", aName, "up")
	b.Run(tb, "ip", "link", "set", bName, "up")
}

// Mirror copies every frame received and sent on dev to mirror, both in
// namespace n, as a switch's SPAN port would. XDP sees ingress only; a
// sensor on mirror's peer then sees both directions of dev's traffic.
func Mirror(tb testing.TB, n *Netns, dev, mirror string) {
	tb.Helper()
	n.Run(tb, "tc", "qdisc", "add", "dev", dev, "clsact")
	for _, dir := range []string{"ingress", "egress"} {
		n.Run(tb, "tc", "filter", "add", "dev", dev, dir, "protocol", "all", "u32", "match", "u32", "0", "0",
			"action", "mirred", "egress", "mirror", "dev", mirror)
	}
}
