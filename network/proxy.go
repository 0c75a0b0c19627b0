package network

import (
	"io"
	"net"
	"sync"
	"time"
)

// udpIdle ends a UDP flow that carried nothing either way for that long.
const udpIdle = 90 * time.Second

// pipe copies a and b into each other until both directions end, passing
// half-closes on, then closes both.
func pipe(a, b net.Conn) {
	var wg sync.WaitGroup
	wg.Add(2)
	cp := func(dst, src net.Conn) {
		defer wg.Done()
		io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		} else {
			dst.Close()
		}
	}
	go cp(a, b)
	go cp(b, a)
	wg.Wait()
	a.Close()
	b.Close()
}

// udpPair copies datagrams between two connected UDP sockets until one
// fails or neither carried anything for idle.
func udpPair(a, b net.Conn, idle time.Duration) {
	var (
		mu   sync.Mutex
		last = time.Now()
		done = make(chan struct{}, 2)
	)
	cp := func(dst, src net.Conn) {
		defer func() { done <- struct{}{} }()
		buf := make([]byte, 65535)
		for {
			src.SetReadDeadline(time.Now().Add(idle))
			n, err := src.Read(buf)
			if err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					mu.Lock()
					quiet := time.Since(last) >= idle
					mu.Unlock()
					if !quiet {
						continue
					}
				}
				return
			}
			mu.Lock()
			last = time.Now()
			mu.Unlock()
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	a.Close()
	b.Close()
	<-done
}

// udpProxy serves a host UDP socket: each client address gets its own
// connection into the guest from dial, with replies sent back to it.
type udpProxy struct {
	pc   net.PacketConn
	dial func() (net.Conn, error)

	mu    sync.Mutex
	flows map[string]net.Conn
}

func (p *udpProxy) run() {
	buf := make([]byte, 65535)
	for {
		n, from, err := p.pc.ReadFrom(buf)
		if err != nil {
			p.mu.Lock()
			for _, c := range p.flows {
				c.Close()
			}
			p.flows = nil
			p.mu.Unlock()
			return
		}
		key := from.String()
		p.mu.Lock()
		if p.flows == nil {
			p.flows = map[string]net.Conn{}
		}
		c, ok := p.flows[key]
		if !ok {
			c, err = p.dial()
			if err != nil {
				p.mu.Unlock()
				continue
			}
			p.flows[key] = c
			go p.replies(c, from, key)
		}
		p.mu.Unlock()
		c.Write(buf[:n])
	}
}

// replies sends the guest's answers to the client until the flow idles.
func (p *udpProxy) replies(c net.Conn, to net.Addr, key string) {
	defer func() {
		p.mu.Lock()
		if p.flows[key] == c {
			delete(p.flows, key)
		}
		p.mu.Unlock()
		c.Close()
	}()
	buf := make([]byte, 65535)
	for {
		c.SetReadDeadline(time.Now().Add(udpIdle))
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		if _, err := p.pc.WriteTo(buf[:n], to); err != nil {
			return
		}
	}
}
