package netconf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/vmcompose/vmcompose/guest/agent"
)

// Configure sets up each interface as ifaces says. The loopback is the
// caller's business.
func Configure(ifaces []agent.Interface) error {
	for _, itf := range ifaces {
		if err := configure(itf); err != nil {
			return fmt.Errorf("network interface %s: %w", itf.MAC, err)
		}
	}
	return nil
}

func configure(itf agent.Interface) error {
	mac, err := net.ParseMAC(itf.MAC)
	if err != nil {
		return err
	}
	name, err := byMAC(mac)
	if err != nil {
		return err
	}
	link, err := net.InterfaceByName(name)
	if err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if itf.MTU > 0 {
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			return err
		}
		ifr.SetUint32(uint32(itf.MTU))
		if err := unix.IoctlIfreq(fd, unix.SIOCSIFMTU, ifr); err != nil {
			return fmt.Errorf("MTU %d: %w", itf.MTU, err)
		}
	}
	for _, a := range itf.Addresses {
		p, err := netip.ParsePrefix(a)
		if err != nil {
			return fmt.Errorf("address %q: want CIDR form such as 10.0.0.5/24: %w", a, err)
		}
		if err := addAddress(link.Index, p); err != nil {
			return fmt.Errorf("address %s: %w", a, err)
		}
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bringing %s up: %w", name, err)
	}
	if itf.Gateway != "" {
		gw, err := netip.ParseAddr(itf.Gateway)
		if err != nil {
			return fmt.Errorf("gateway %q: %w", itf.Gateway, err)
		}
		if err := addDefaultRoute(link.Index, gw); err != nil {
			return fmt.Errorf("default route via %s: %w", gw, err)
		}
	}
	return nil
}

// byMAC returns the name of the interface with that hardware address.
func byMAC(mac net.HardwareAddr) (string, error) {
	ents, _ := os.ReadDir("/sys/class/net")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/sys/class/net", e.Name(), "address"))
		if err != nil {
			continue
		}
		if m, err := net.ParseMAC(strings.TrimSpace(string(b))); err == nil && m.String() == mac.String() {
			return e.Name(), nil
		}
	}
	return "", errors.New("no interface with that MAC address in /sys/class/net")
}

func family(a netip.Addr) uint8 {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

func addAddress(index int, p netip.Prefix) error {
	addr := p.Addr().Unmap()
	body := make([]byte, unix.SizeofIfAddrmsg)
	body[0] = family(addr)
	body[1] = uint8(p.Bits())
	binary.NativeEndian.PutUint32(body[4:], uint32(index))
	body = appendAttr(body, unix.IFA_LOCAL, addr.AsSlice())
	body = appendAttr(body, unix.IFA_ADDRESS, addr.AsSlice())
	return request(unix.RTM_NEWADDR, unix.NLM_F_CREATE|unix.NLM_F_EXCL, body)
}

func addDefaultRoute(index int, gw netip.Addr) error {
	gw = gw.Unmap()
	body := make([]byte, unix.SizeofRtMsg)
	body[0] = family(gw)
	body[4] = unix.RT_TABLE_MAIN
	body[5] = unix.RTPROT_BOOT
	body[6] = unix.RT_SCOPE_UNIVERSE
	body[7] = unix.RTN_UNICAST
	body = appendAttr(body, unix.RTA_GATEWAY, gw.AsSlice())
	oif := make([]byte, 4)
	binary.NativeEndian.PutUint32(oif, uint32(index))
	body = appendAttr(body, unix.RTA_OIF, oif)
	return request(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_EXCL, body)
}

func appendAttr(b []byte, typ uint16, data []byte) []byte {
	l := unix.SizeofRtAttr + len(data)
	h := make([]byte, unix.SizeofRtAttr)
	binary.NativeEndian.PutUint16(h, uint16(l))
	binary.NativeEndian.PutUint16(h[2:], typ)
	b = append(append(b, h...), data...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// request sends one rtnetlink request and waits for its acknowledgement.
func request(typ, flags uint16, body []byte) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	msg := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(body))
	binary.NativeEndian.PutUint32(msg, uint32(unix.SizeofNlMsghdr+len(body)))
	binary.NativeEndian.PutUint16(msg[4:], typ)
	binary.NativeEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK|flags)
	binary.NativeEndian.PutUint32(msg[8:], 1)
	msg = append(msg, body...)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	buf := make([]byte, 8192)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return fmt.Errorf("netlink: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return fmt.Errorf("netlink: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Type != unix.NLMSG_ERROR || len(m.Data) < 4 {
				continue
			}
			errno := int32(binary.NativeEndian.Uint32(m.Data))
			if errno == 0 || unix.Errno(-errno) == unix.EEXIST {
				return nil // EEXIST: a retried Start set it already
			}
			return unix.Errno(-errno)
		}
	}
}
