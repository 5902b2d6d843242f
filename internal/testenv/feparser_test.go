package testenv

import (
	"encoding/binary"
	"math/rand"
	"testing"

	"github.com/stretchr/testify/require"
)

func untyped(code uint32, body []byte) []byte {
	b := make([]byte, 8, 8+len(body))
	binary.BigEndian.PutUint32(b[0:4], uint32(8+len(body))) //nolint:gosec // test bodies are small
	binary.BigEndian.PutUint32(b[4:8], code)
	return append(b, body...)
}

func typed(t byte, body []byte) []byte {
	b := make([]byte, 5, 5+len(body))
	b[0] = t
	binary.BigEndian.PutUint32(b[1:5], uint32(4+len(body))) //nolint:gosec // test bodies are small
	return append(b, body...)
}

func startup() []byte {
	return untyped(196608, []byte("user\x00app\x00database\x00db\x00\x00"))
}

// session is a realistic stream: startup, password, simple queries, an
// extended-protocol round with a body big enough to span chunks, terminate.
func session() (stream []byte, wantQ, wantP int) {
	big := make([]byte, 70000)
	for i := range big {
		big[i] = 'Q' // bodies full of type bytes must not be counted
	}
	var s []byte
	s = append(s, startup()...)
	s = append(s, typed('p', []byte("SCRAM-SHA-256\x00...."))...)
	s = append(s, typed('Q', []byte("SELECT 1\x00"))...)
	s = append(s, typed('Q', append(append([]byte("SELECT '"), big...), "'\x00"...))...)
	s = append(s, typed('P', []byte("\x00SELECT $1\x00\x00\x00"))...)
	s = append(s, typed('B', big[:100])...)
	s = append(s, typed('D', []byte("P\x00"))...)
	s = append(s, typed('E', []byte("\x00\x00\x00\x00\x00"))...)
	s = append(s, typed('S', nil)...)
	s = append(s, typed('P', append([]byte("s1\x00"), big[:5000]...))...)
	s = append(s, typed('H', nil)...)
	s = append(s, typed('Q', []byte("COMMIT\x00"))...)
	s = append(s, typed('X', nil)...)
	return s, 3, 2
}

type counts struct{ q, p, other int }

func feed(chunks [][]byte, server func(p *feParser, i int)) counts {
	var c counts
	p := newFEParser(func(t byte) {
		switch t {
		case 'Q':
			c.q++
		case 'P':
			c.p++
		default:
			c.other++
		}
	})
	for i, ch := range chunks {
		p.clientBytes(ch)
		if server != nil {
			server(p, i)
		}
	}
	return c
}

func TestFEParser_CountsAcrossEveryChunkBoundary(t *testing.T) {
	s, wantQ, wantP := session()
	require.Equal(t, counts{wantQ, wantP, 7}, feed([][]byte{s}, nil))

	// One byte at a time.
	ones := make([][]byte, len(s))
	for i := range s {
		ones[i] = s[i : i+1]
	}
	require.Equal(t, counts{wantQ, wantP, 7}, feed(ones, nil))

	// Every two-way split of the small prefix, and random splits of all.
	for cut := 0; cut <= 200; cut++ {
		require.Equal(t, counts{wantQ, wantP, 7}, feed([][]byte{s[:cut], s[cut:]}, nil), "cut at %d", cut)
	}
	rng := rand.New(rand.NewSource(1)) //nolint:gosec // reproducible chunk sizes, not security
	for round := 0; round < 200; round++ {
		var chunks [][]byte
		for rest := s; len(rest) > 0; {
			n := 1 + rng.Intn(min(len(rest), 9000))
			chunks = append(chunks, rest[:n])
			rest = rest[n:]
		}
		require.Equal(t, counts{wantQ, wantP, 7}, feed(chunks, nil), "round %d", round)
	}
}

func TestFEParser_FollowsSSLAndGSSENCRefusals(t *testing.T) {
	s, wantQ, wantP := session()
	for _, code := range []uint32{sslRequestCode, gssEncRequestCode} {
		// Request, the server's 'N', then the plain session, split anywhere.
		req := untyped(code, nil)
		got := feed([][]byte{req[:3], req[3:], s[:7], s[7:]}, func(p *feParser, i int) {
			if i == 1 {
				p.serverBytes([]byte{'N'})
			}
		})
		require.Equal(t, counts{wantQ, wantP, 7}, got, "code %d", code)
	}
}

func TestFEParser_StopsAtEncryptionAndCancel(t *testing.T) {
	s, _, _ := session()
	// SSL accepted: what follows is TLS, not counted.
	got := feed([][]byte{untyped(sslRequestCode, nil), s}, func(p *feParser, i int) {
		if i == 0 {
			p.serverBytes([]byte{'S'})
		}
	})
	require.Equal(t, counts{}, got)
	// GSS accepted.
	got = feed([][]byte{untyped(gssEncRequestCode, nil), s}, func(p *feParser, i int) {
		if i == 0 {
			p.serverBytes([]byte{'G'})
		}
	})
	require.Equal(t, counts{}, got)
	// Direct TLS (PostgreSQL 17 sslnegotiation=direct).
	require.Equal(t, counts{}, feed([][]byte{append([]byte{0x16, 0x03, 0x01}, s...)}, nil))
	// CancelRequest: 16 bytes, nothing after it is a message.
	cancel := untyped(cancelRequestCode, []byte{0, 0, 0, 1, 0, 0, 0, 2})
	require.Equal(t, counts{}, feed([][]byte{cancel, typed('Q', []byte("x\x00"))}, nil))
	// Garbage length.
	require.Equal(t, counts{}, feed([][]byte{{0, 0, 0, 2, 0, 0, 0, 0}, s}, nil))
}
