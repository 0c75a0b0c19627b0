//go:build !linux

package main

import "os"

func main() {
	os.Stderr.WriteString("vminit: runs only inside a Linux guest\n")
	os.Exit(2)
}
