package testenv

import "encoding/binary"

// Frontend request codes of the untyped first messages.
const (
	sslRequestCode    = 80877103
	gssEncRequestCode = 80877104
	cancelRequestCode = 80877102
	// maxStartupLen bounds an untyped message (PostgreSQL itself allows
	// 10000 bytes for a startup packet).
	maxStartupLen = 10000
)

type feState int

const (
	feUntyped  feState = iota // expecting an untyped message: int32 len, int32 code, body
	feAwaitNeg                // SSLRequest/GSSENCRequest sent, server's one-byte answer pending
	feTyped                   // regular messages: byte type, int32 len (including itself), body
	feOpaque                  // TLS/GSS-encrypted, cancelled, or not PostgreSQL: stop parsing
)

// feParser follows the PostgreSQL frontend (client to server) message
// stream of one connection and reports each typed message's type byte. It
// is a streaming parser: bytes may arrive split at any point, and message
// bodies are skipped, never buffered. It is not safe for concurrent use
// (the proxy serializes it with a mutex because serverBytes comes from the
// other direction).
type feParser struct {
	state feState
	hdr   [8]byte
	hdrN  int
	skip  int
	after feState // state once skip reaches 0
	onMsg func(typ byte)
}

func newFEParser(onMsg func(byte)) *feParser { return &feParser{onMsg: onMsg} }

// clientBytes feeds bytes sent by the client.
func (p *feParser) clientBytes(b []byte) {
	for len(b) > 0 {
		if p.skip > 0 {
			n := min(p.skip, len(b))
			p.skip -= n
			b = b[n:]
			if p.skip == 0 {
				p.state = p.after
			}
			continue
		}
		switch p.state {
		case feOpaque:
			return
		case feAwaitNeg:
			// The client must wait for the server's answer; anything else is
			// not a stream we understand.
			p.state = feOpaque
			return
		case feUntyped:
			if p.hdrN == 0 && b[0] == 0x16 { // TLS handshake record: direct SSL negotiation
				p.state = feOpaque
				return
			}
			var full bool
			if b, full = p.header(b, 8); !full {
				return
			}
			length := int(binary.BigEndian.Uint32(p.hdr[0:4]))
			code := binary.BigEndian.Uint32(p.hdr[4:8])
			if length < 8 || length > maxStartupLen {
				p.state = feOpaque
				return
			}
			switch code {
			case sslRequestCode, gssEncRequestCode:
				p.after = feAwaitNeg
			case cancelRequestCode:
				p.after = feOpaque // the connection carries nothing else
			default: // StartupMessage (protocol 3.x) or an unknown version the server will reject
				p.after = feTyped
			}
			p.skip = length - 8
			if p.skip == 0 {
				p.state = p.after
			}
		case feTyped:
			var full bool
			if b, full = p.header(b, 5); !full {
				return
			}
			typ := p.hdr[0]
			length := int(binary.BigEndian.Uint32(p.hdr[1:5]))
			if length < 4 {
				p.state = feOpaque
				return
			}
			p.onMsg(typ)
			p.after = feTyped
			p.skip = length - 4
		}
	}
}

// header moves bytes of b into p.hdr until it holds size bytes and returns
// what is left of b. full reports whether the header is complete: then
// p.hdr[:size] is it and the next header starts empty; otherwise b was used
// up and the header goes on with the next bytes.
func (p *feParser) header(b []byte, size int) (rest []byte, full bool) {
	n := copy(p.hdr[p.hdrN:size], b)
	p.hdrN += n
	if p.hdrN < size {
		return b[n:], false
	}
	p.hdrN = 0
	return b[n:], true
}

// serverBytes feeds bytes sent by the server; only the one-byte answer to
// an SSLRequest or GSSENCRequest matters: 'N' means a plain startup packet
// follows, anything else ('S', 'G', an error) means we cannot follow.
func (p *feParser) serverBytes(b []byte) {
	if p.state != feAwaitNeg || len(b) == 0 {
		return
	}
	if b[0] == 'N' {
		p.state = feUntyped
		return
	}
	p.state = feOpaque
}
