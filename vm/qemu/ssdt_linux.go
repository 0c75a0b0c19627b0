package qemu

import (
	"encoding/binary"
	"fmt"
)

// The microvm machine's virtio-mmio transports (QEMU's hw/i386/microvm.c):
// transport i has its registers at mmioBase + i*mmioSize and raises
// interrupt irqBase + i. Devices go on the highest free transport first.
const (
	transports = 24
	mmioBase   = 0xfeb00000
	mmioSize   = 0x200
	irqBase    = 24
	// agentTransport carries the control channel, the one device every
	// VM has, templates included.
	agentTransport = transports - 1
	// Transport 0 is left empty: a disk on it hung the guest's probe
	// in some boots.
	firstDeviceTransport = 1
)

// maxDevices is how many disks and NICs a VM can have besides the control
// channel.
const maxDevices = agentTransport - firstDeviceTransport

// transportsSSDT returns an ACPI table that declares the virtio-mmio
// transports 0 to agentTransport-1 as QEMU would (_HID LNRO0005, memory
// window, interrupt). QEMU describes only the transports that have a device
// at boot, so without it a guest booted as a template, with its control
// channel only, would never find the disks and NICs that its restored
// copies get on the other transports.
func transportsSSDT() []byte {
	var devs []byte
	for i := range agentTransport {
		devs = append(devs, amlTransport(i)...)
	}
	scope := append([]byte(`\_SB_`), devs...)
	body := append([]byte{0x10}, amlPkg(scope)...) // ScopeOp
	t := make([]byte, 36, 36+len(body))
	copy(t, "SSDT")
	binary.LittleEndian.PutUint32(t[4:], uint32(36+len(body)))
	t[8] = 2 // revision
	copy(t[10:16], "VMCOMP")
	copy(t[16:24], "VIRTMMIO")
	binary.LittleEndian.PutUint32(t[24:], 1) // OEM revision
	copy(t[28:32], "VMC ")
	binary.LittleEndian.PutUint32(t[32:], 1) // compiler revision
	t = append(t, body...)
	var sum byte
	for _, b := range t {
		sum += b
	}
	t[9] = -sum // checksum: all bytes add up to 0
	return t
}

// amlTransport is Device (XRnn) { _HID "LNRO0005", _UID n, _CCA 1,
// _CRS { Memory32Fixed (ReadWrite, base, size), Interrupt (Consumer,
// Level, ActiveHigh, Exclusive) { irq } } }, as QEMU writes it for the
// transports it describes (VRnn).
func amlTransport(i int) []byte {
	res := []byte{0x86, 0x09, 0x00, 0x01} // Memory32Fixed, read-write
	res = binary.LittleEndian.AppendUint32(res, uint32(mmioBase+i*mmioSize))
	res = binary.LittleEndian.AppendUint32(res, mmioSize)
	res = append(res, 0x89, 0x06, 0x00, 0x01, 0x01) // extended interrupt, one
	res = binary.LittleEndian.AppendUint32(res, uint32(irqBase+i))
	res = append(res, 0x79, 0x00) // end tag
	body := []byte(fmt.Sprintf("XR%02d", i))
	body = append(body, amlName("_HID", append(append([]byte{0x0d}, "LNRO0005"...), 0))...)
	body = append(body, amlName("_UID", amlInteger(i))...)
	body = append(body, amlName("_CCA", []byte{0x01})...)
	buf := append(amlInteger(len(res)), res...)
	body = append(body, amlName("_CRS", append([]byte{0x11}, amlPkg(buf)...))...) // BufferOp
	return append([]byte{0x5b, 0x82}, amlPkg(body)...)                            // DeviceOp
}

func amlName(name string, value []byte) []byte {
	return append(append([]byte{0x08}, name...), value...) // NameOp
}

func amlInteger(v int) []byte {
	switch {
	case v == 0:
		return []byte{0x00} // ZeroOp
	case v == 1:
		return []byte{0x01} // OneOp
	case v < 1<<8:
		return []byte{0x0a, byte(v)} // BytePrefix
	case v < 1<<16:
		return binary.LittleEndian.AppendUint16([]byte{0x0b}, uint16(v)) // WordPrefix
	default:
		return binary.LittleEndian.AppendUint32([]byte{0x0c}, uint32(v)) // DWordPrefix
	}
}

// amlPkg prefixes payload with its AML PkgLength, whose count includes the
// length bytes themselves.
func amlPkg(payload []byte) []byte {
	n := len(payload)
	for k := 1; k <= 4; k++ {
		total := n + k
		if k == 1 && total < 1<<6 {
			return append([]byte{byte(total)}, payload...)
		}
		if k > 1 && total < 1<<(4+8*(k-1)) {
			b := []byte{byte((k-1)<<6 | total&0xf)}
			total >>= 4
			for range k - 1 {
				b = append(b, byte(total))
				total >>= 8
			}
			return append(b, payload...)
		}
	}
	panic("AML package too long")
}
