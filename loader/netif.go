package loader

import (
	"errors"
	"fmt"
	"net"
	"sort"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// InterfaceIndex resolves an interface name with a clear error when it is missing.
func InterfaceIndex(name string) (int, error) {
	if name == "" {
		return 0, errors.New("interface name is empty")
	}
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return 0, fmt.Errorf("interface %s: no such interface", name)
		}
		return 0, fmt.Errorf("interface %s: %w", name, err)
	}
	return l.Attrs().Index, nil
}

// InterfaceName returns the name of an interface index, or "" if it is gone.
func InterfaceName(ifindex uint32) string {
	ifi, err := net.InterfaceByIndex(int(ifindex))
	if err != nil {
		return ""
	}
	return ifi.Name
}

// DefaultInterface returns the interface holding the default route of the
// current network namespace (IPv4 first, then IPv6), as the seed's env.sh
// picked it. With several default routes the lowest metric wins.
func DefaultInterface() (string, error) {
	return defaultInterface(netlink.RouteList, netlink.LinkByIndex)
}

func defaultInterface(routes func(netlink.Link, int) ([]netlink.Route, error), byIndex func(int) (netlink.Link, error)) (string, error) {
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := routes(nil, family)
		if err != nil {
			return "", fmt.Errorf("list routes: %w", err)
		}
		var defaults []netlink.Route
		for _, r := range rs {
			if r.LinkIndex > 0 && (r.Dst == nil || r.Dst.IP.IsUnspecified() && isZeroMask(r.Dst.Mask)) {
				defaults = append(defaults, r)
			}
		}
		sort.SliceStable(defaults, func(i, j int) bool { return defaults[i].Priority < defaults[j].Priority })
		if len(defaults) > 0 {
			l, err := byIndex(defaults[0].LinkIndex)
			if err != nil {
				return "", fmt.Errorf("default route interface %d: %w", defaults[0].LinkIndex, err)
			}
			return l.Attrs().Name, nil
		}
	}
	return "", errors.New("no default route: name an interface with -i")
}

func isZeroMask(m net.IPMask) bool {
	ones, _ := m.Size()
	return ones == 0
}

// CheckPrivileges fails early, with the reason, when the process lacks the
// capabilities to load and attach XDP programs: CAP_NET_ADMIN, and CAP_BPF
// (with CAP_PERFMON) or, on kernels before 5.8, CAP_SYS_ADMIN.
func CheckPrivileges() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("read capabilities: %w", err)
	}
	has := func(c uint) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	if has(unix.CAP_NET_ADMIN) && (has(unix.CAP_SYS_ADMIN) || has(unix.CAP_BPF) && has(unix.CAP_PERFMON)) {
		return nil
	}
	return errors.New("permission denied: flowsensor needs root or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON")
}
