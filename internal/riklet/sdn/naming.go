package sdn

import (
	"crypto/sha256"
	"encoding/hex"
	"net"
	"regexp"
)

// tapPrefix starts every TAP name rik creates; the bridge and other rik
// devices (rik0) never match tapPattern, so Reconcile cannot delete them.
const tapPrefix = "rik"

// tapPattern matches the TAP names TapName produces and nothing else.
var tapPattern = regexp.MustCompile(`^rik[0-9a-f]{10}$`)

// TapName returns the TAP device name of instance id: "rik" and 10 hex
// digits of the id's SHA-256 (13 characters, under IFNAMSIZ-1 = 15).
func TapName(id string) string {
	sum := sha256.Sum256([]byte(id))
	return tapPrefix + hex.EncodeToString(sum[:5])
}

// IsTapName reports whether name is one TapName could have produced.
func IsTapName(name string) bool { return tapPattern.MatchString(name) }

// GuestMAC returns the MAC address of the guest NIC of instance id:
// locally administered, unicast, derived from the id's SHA-256 so that the
// same id always gets the same address.
func GuestMAC(id string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("mac:" + id))
	mac := net.HardwareAddr(sum[:6])
	mac[0] = (mac[0] | 0x02) &^ 0x01 // locally administered, unicast
	return mac
}
