package rootfs

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"os"
	"syscall"
	"time"

	"github.com/rik-org/rik/internal/workload"
)

// ErrNotAllowed: the node's fetch policy refuses the source. It wraps
// ErrFetch.
var ErrNotAllowed = fmt.Errorf("%w: not allowed", ErrFetch)

// errAddrRefused is what the dialer returns for an address the policy
// refuses; it travels up through net and http errors.
var errAddrRefused = errors.New("address refused by the fetch policy")

// Defaults of FetchPolicy.
const (
	DefaultConnectTimeout = 10 * time.Second
	DefaultFetchTimeout   = 30 * time.Minute
)

// FetchPolicy says where a node fetches root filesystems from.
type FetchPolicy struct {
	// Dirs are the directories a file:// rootfs may be under; the file is
	// opened without following a link out of its directory. nil:
	// workload.DefaultRootfsDir.
	Dirs []string
	// AllowPrivate lets http(s) fetches reach loopback and the node's own
	// addresses (`rik dev`). Link-local, metadata, multicast and
	// unspecified addresses are refused whatever it says.
	AllowPrivate bool
	// ConnectTimeout bounds connecting (and the TLS handshake), Timeout a
	// whole fetch, from connecting to the last byte.
	ConnectTimeout time.Duration
	Timeout        time.Duration
}

func (p FetchPolicy) withDefaults() FetchPolicy {
	if p.Dirs == nil {
		p.Dirs = []string{workload.DefaultRootfsDir}
	}
	if p.ConnectTimeout <= 0 {
		p.ConnectTimeout = DefaultConnectTimeout
	}
	if p.Timeout <= 0 {
		p.Timeout = DefaultFetchTimeout
	}
	return p
}

// openFile opens the file a file:// URL names, if it is under one of the
// policy's directories, resolving it inside that directory (os.Root: no
// "..", no symlink, leads out of it). Errors name only what the user
// wrote: nothing about files outside the directories.
func (p FetchPolicy) openFile(rawURL string) (*os.File, error) {
	path, ok := workload.RootfsFilePath(rawURL)
	if !ok {
		return nil, fmt.Errorf("%w: a file:// URL must name an absolute path on the node", ErrUnsupported)
	}
	dir, rel, ok := workload.FileUnder(path, p.Dirs)
	if !ok {
		return nil, fmt.Errorf("%w: %s is not under this node's rootfs directories", ErrNotAllowed, path)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: rootfs directory %s cannot be opened", ErrFetch, dir)
	}
	defer root.Close()
	// O_NONBLOCK: opening a FIFO (or a tty) must not block until a writer
	// comes; it is refused just below. It changes nothing for reading a
	// regular file.
	f, err := root.OpenFile(rel, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%w: %s: no such file", ErrFetch, path)
	case err != nil:
		// A link out of the directory, a permission problem: one answer.
		return nil, fmt.Errorf("%w: %s cannot be opened", ErrFetch, path)
	}
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrFetch, path)
	}
	return f, nil
}

// client returns the HTTP client of the policy: every connection, also
// after a redirect and to whatever a name resolves to, is checked at dial
// time against the policy; there is no proxy (the check would judge the
// proxy, not the source).
func (p FetchPolicy) client() *http.Client {
	d := &net.Dialer{Timeout: p.ConnectTimeout, Control: p.control}
	return &http.Client{Transport: &http.Transport{
		DialContext:           d.DialContext,
		TLSHandshakeTimeout:   p.ConnectTimeout,
		ResponseHeaderTimeout: p.Timeout,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          4,
		IdleConnTimeout:       90 * time.Second,
	}}
}

// control is the dialer's check of the address about to be connected to.
func (p FetchPolicy) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return errAddrRefused
	}
	return p.checkAddr(ap.Addr(), ownAddrs)
}

// checkAddr is the policy for one address; own lists the node's addresses
// (if it cannot, private fetches are refused).
func (p FetchPolicy) checkAddr(a netip.Addr, own func() ([]netip.Addr, error)) error {
	a = a.Unmap().WithZone("")
	if workload.RefusedFetchAddr(a) != "" {
		return errAddrRefused
	}
	if p.AllowPrivate {
		return nil
	}
	if a.IsLoopback() {
		return errAddrRefused
	}
	addrs, err := own()
	if err != nil {
		return errAddrRefused
	}
	for _, o := range addrs {
		if o.WithZone("") == a {
			return errAddrRefused
		}
	}
	return nil
}

// ownAddrs lists the addresses of the node's interfaces (in the caller's
// network namespace).
func ownAddrs() ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out, nil
}
