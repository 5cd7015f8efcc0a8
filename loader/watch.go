package loader

import (
	"context"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// LinkEvent says that an interface of the current network namespace appeared
// or changed (Gone false) or was deleted (Gone true).
type LinkEvent struct {
	Name  string
	Index int
	Gone  bool
}

// WatchLinks sends an event for every interface change in the calling
// thread's network namespace until ctx ends, or returns the error that
// stopped the subscription.
func WatchLinks(ctx context.Context, events chan<- LinkEvent) error {
	updates := make(chan netlink.LinkUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	errc := make(chan error, 1)
	err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{
		ErrorCallback: func(err error) {
			select {
			case errc <- err:
			default:
			}
		},
	})
	if err != nil {
		return fmt.Errorf("watch interfaces: %w", err)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			return fmt.Errorf("watch interfaces: %w", err)
		case u, ok := <-updates:
			if !ok {
				return fmt.Errorf("watch interfaces: netlink subscription closed")
			}
			ev := LinkEvent{Name: u.Attrs().Name, Index: u.Attrs().Index, Gone: u.Header.Type == unix.RTM_DELLINK}
			select {
			case events <- ev:
			case <-ctx.Done():
				return nil
			}
		}
	}
}
