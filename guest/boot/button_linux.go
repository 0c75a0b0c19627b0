package boot

import (
	"encoding/binary"
	"log/slog"
	"os"
	"path/filepath"
)

// Input event constants (linux/input-event-codes.h).
const (
	evKey    = 1
	keyPower = 116
)

// WatchPowerButton calls pressed (from another goroutine) each time an input
// device reports KEY_POWER: the ACPI power button a VMM presses to ask the
// guest to shut down (QEMU's system_powerdown), which the kernel's button
// and evdev modules turn into an input event. It watches the devices there
// are when it is called.
func WatchPowerButton(log *slog.Logger, pressed func()) {
	evs, _ := filepath.Glob("/dev/input/event*")
	for _, ev := range evs {
		f, err := os.Open(ev)
		if err != nil {
			log.Warn("input device", "path", ev, "err", err)
			continue
		}
		go func() {
			defer f.Close()
			var e [24]byte // struct input_event on 64-bit: time, type, code, value
			for {
				if _, err := f.Read(e[:]); err != nil {
					return
				}
				typ := binary.LittleEndian.Uint16(e[16:])
				code := binary.LittleEndian.Uint16(e[18:])
				val := int32(binary.LittleEndian.Uint32(e[20:]))
				if typ == evKey && code == keyPower && val == 1 {
					log.Info("power button pressed")
					pressed()
				}
			}
		}()
	}
	log.Debug("watching for the power button", "devices", len(evs))
}
