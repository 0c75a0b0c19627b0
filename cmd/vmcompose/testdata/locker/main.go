// Command locker takes file locks for the shared volume tests, which
// run it in VMs (busybox has no flock applet):
//
//	locker flock FILE SECONDS   flock(2) LOCK_EX|LOCK_NB; print "locked", hold, exit
//	locker flock-n FILE         flock(2) LOCK_EX|LOCK_NB: print "locked" or "busy"
//	locker flock-w FILE         flock(2) LOCK_EX, blocking: print "locked" or the error
//	locker fcntl FILE SECONDS   fcntl(2) F_SETLK write lock; print "locked", hold, exit
//	locker fcntl-n FILE         fcntl(2) F_SETLK write lock: print "locked" or "busy"
//	locker fcntl-w FILE         fcntl(2) F_SETLKW write lock: print "locked" or the error
package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: locker flock|flock-n|fcntl|fcntl-n|fcntl-w FILE [SECONDS]")
		os.Exit(2)
	}
	f, err := os.OpenFile(os.Args[2], os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	fd := int(f.Fd())
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0}
	switch os.Args[1] {
	case "flock", "flock-n":
		err = unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
	case "flock-w":
		err = unix.Flock(fd, unix.LOCK_EX)
	case "fcntl", "fcntl-n":
		err = unix.FcntlFlock(uintptr(fd), unix.F_SETLK, &lk)
	case "fcntl-w":
		err = unix.FcntlFlock(uintptr(fd), unix.F_SETLKW, &lk)
	default:
		fmt.Fprintln(os.Stderr, "unknown mode", os.Args[1])
		os.Exit(2)
	}
	switch {
	case errors.Is(err, unix.EWOULDBLOCK), errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EACCES):
		fmt.Println("busy")
		os.Exit(1)
	case err != nil:
		fmt.Println(err)
		os.Exit(1)
	}
	fmt.Println("locked")
	if len(os.Args) > 3 {
		n, _ := strconv.Atoi(os.Args[3])
		time.Sleep(time.Duration(n) * time.Second)
	}
}
