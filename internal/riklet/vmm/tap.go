package vmm

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/rik-org/rik/internal/riklet/cgroups"
)

// OpenTap attaches to the existing TAP device name (in the network
// namespace at netns, if set) and returns its file, to hand to a VMM as a
// file descriptor: the VMM then needs neither CAP_NET_ADMIN nor access to
// /dev/net/tun (Virtlet's tapmanager does the same). The device must not
// be multi-queue; the riklet creates its TAPs persistent, so the device
// outlives the file.
func OpenTap(name, netns string) (*os.File, error) {
	var f *os.File
	open := func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("opening /dev/net/tun: %w", err)
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			unix.Close(fd)
			return fmt.Errorf("opening tap %s: %w", name, err)
		}
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return fmt.Errorf("opening tap %s: %w", name, err)
		}
		// Without a device of that name, TUNSETIFF made one, not persistent
		// (it goes with fd).
		if err := unix.IoctlIfreq(fd, unix.TUNGETIFF, ifr); err != nil || ifr.Uint16()&unix.IFF_PERSIST == 0 {
			unix.Close(fd)
			return fmt.Errorf("opening tap %s: no such persistent tap device", name)
		}
		f = os.NewFile(uintptr(fd), "tap:"+name)
		return nil
	}
	if netns == "" {
		return f, open()
	}
	err := cgroups.OnThrowawayThread(func() error {
		if err := enterNetns(netns); err != nil {
			return err
		}
		return open()
	})
	return f, err
}
