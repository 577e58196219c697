// The IPNS commands of the Go interop peer (see the command list in main.go): records are made
// and checked with boxo's ipns package, stored and fetched through the DHT with its stock
// validators, and single requests go to one chosen peer so that a test can see exactly what
// that peer stores and refuses.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ipfs/boxo/ipns"
	ipnspb "github.com/ipfs/boxo/ipns/pb"
	"github.com/ipfs/boxo/path"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	dhtpb "github.com/libp2p/go-libp2p-kad-dht/pb"
	recpb "github.com/libp2p/go-libp2p-record/pb"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio/pbio"
	"google.golang.org/protobuf/proto"
)

// The TTL of the records made here: Kubo's default.
const recordTTL = time.Hour

// oneShotSender sends each DHT message on a stream of its own, which the protocol allows, so
// that pb.ProtocolMessenger can talk to exactly one peer without a lookup.
type oneShotSender struct{ h host.Host }

func (s oneShotSender) open(ctx context.Context, p peer.ID) (network.Stream, error) {
	stream, err := s.h.NewStream(ctx, p, dht.ProtocolDHT)
	if err != nil {
		return nil, err
	}
	if deadline, ok := ctx.Deadline(); ok {
		_ = stream.SetDeadline(deadline)
	}
	return stream, nil
}

func (s oneShotSender) SendRequest(ctx context.Context, p peer.ID, m *dhtpb.Message) (*dhtpb.Message, error) {
	stream, err := s.open(ctx, p)
	if err != nil {
		return nil, err
	}
	if err := pbio.NewDelimitedWriter(stream).WriteMsg(m); err != nil {
		_ = stream.Reset()
		return nil, err
	}
	answer := new(dhtpb.Message)
	if err := pbio.NewDelimitedReader(stream, network.MessageSizeMax).ReadMsg(answer); err != nil {
		// A refused PUT_VALUE shows here: the server resets the stream instead of answering.
		_ = stream.Reset()
		return nil, err
	}
	_ = stream.Close()
	return answer, nil
}

func (s oneShotSender) SendMessage(ctx context.Context, p peer.ID, m *dhtpb.Message) error {
	stream, err := s.open(ctx, p)
	if err != nil {
		return err
	}
	if err := pbio.NewDelimitedWriter(stream).WriteMsg(m); err != nil {
		_ = stream.Reset()
		return err
	}
	return stream.Close()
}

// ipnsDirect runs put-to and get-from: one request to one peer.
func ipnsDirect(ctx context.Context, h host.Host, fields []string) {
	if len(fields) < 3 {
		fail(fmt.Errorf("%s needs a peer id and a key", fields[0]))
		return
	}
	to, err := peer.Decode(fields[1])
	if err != nil {
		fail(err)
		return
	}
	key, err := hex.DecodeString(fields[2])
	if err != nil {
		fail(err)
		return
	}
	messenger, err := dhtpb.NewProtocolMessenger(oneShotSender{h})
	if err != nil {
		fail(err)
		return
	}
	if fields[0] == "put-to" {
		if len(fields) < 4 {
			fail(errors.New("put-to needs a value"))
			return
		}
		value, err := hex.DecodeString(fields[3])
		if err != nil {
			fail(err)
			return
		}
		rec := &recpb.Record{Key: key, Value: value}
		if err := messenger.PutValue(ctx, to, rec); err != nil {
			fail(err)
			return
		}
		reply(map[string]bool{"ok": true})
		return
	}
	rec, _, err := messenger.GetValue(ctx, to, string(key))
	if err != nil {
		fail(err)
		return
	}
	if rec == nil {
		reply(map[string]any{"value": nil})
		return
	}
	reply(map[string]string{"value": hex.EncodeToString(rec.GetValue())})
}

// ipnsCommand runs the commands that make, publish, resolve, check and compare records.
func ipnsCommand(ctx context.Context, h host.Host, kad *dht.IpfsDHT, fields []string) {
	switch fields[0] {
	case "select":
		if len(fields) < 3 {
			fail(errors.New("select needs a key and at least one value"))
			return
		}
		key, err := hex.DecodeString(fields[1])
		if err != nil {
			fail(err)
			return
		}
		values := [][]byte{}
		for _, field := range fields[2:] {
			value, err := hex.DecodeString(field)
			if err != nil {
				fail(err)
				return
			}
			values = append(values, value)
		}
		index, err := kad.Validator.Select(string(key), values)
		if err != nil {
			fail(err)
			return
		}
		reply(map[string]int{"index": index})
	case "genkey":
		sk, err := generateKey(strings.Join(fields[1:], " "))
		if err != nil {
			fail(err)
			return
		}
		id, err := peer.IDFromPrivateKey(sk)
		if err != nil {
			fail(err)
			return
		}
		encoded, err := crypto.MarshalPrivateKey(sk)
		if err != nil {
			fail(err)
			return
		}
		reply(map[string]string{"id": id.String(), "key": hex.EncodeToString(encoded)})
	case "ipns-record", "ipns-publish":
		made, err := makeRecord(h, fields[1:])
		if err != nil {
			fail(err)
			return
		}
		if fields[0] == "ipns-publish" {
			if err := kad.PutValue(ctx, string(made.key), made.record); err != nil {
				fail(err)
				return
			}
		}
		reply(map[string]any{
			"name":          made.name.String(),
			"key":           hex.EncodeToString(made.key),
			"record":        hex.EncodeToString(made.record),
			"validity_unix": made.eol.Unix(),
		})
	case "ipns-resolve":
		resolve(ctx, kad, fields)
	case "ipns-validate":
		if len(fields) < 3 {
			fail(errors.New("ipns-validate needs a key and a record"))
			return
		}
		key, err1 := hex.DecodeString(fields[1])
		record, err2 := hex.DecodeString(fields[2])
		if err1 != nil || err2 != nil {
			fail(errors.New("bad hex"))
			return
		}
		// The DHT's own validator: the stock /pk and /ipns ones dht.New registers.
		if err := kad.Validator.Validate(string(key), record); err != nil {
			fail(err)
			return
		}
		reply(map[string]bool{"ok": true})
	}
}

func generateKey(kind string) (crypto.PrivKey, error) {
	var sk crypto.PrivKey
	var err error
	switch kind {
	case "ed25519":
		sk, _, err = crypto.GenerateEd25519Key(rand.Reader)
	case "secp256k1":
		sk, _, err = crypto.GenerateSecp256k1Key(rand.Reader)
	case "ecdsa":
		sk, _, err = crypto.GenerateECDSAKeyPair(rand.Reader)
	case "rsa":
		sk, _, err = crypto.GenerateRSAKeyPair(2048, rand.Reader)
	default:
		err = fmt.Errorf("unknown key type %q", kind)
	}
	return sk, err
}

// madeRecord is a record made by makeRecord.
type madeRecord struct {
	name   peer.ID // the signer's peer id
	key    []byte  // the routing key of the name
	record []byte  // the encoded record
	eol    time.Time
}

// makeRecord signs a record from `<value-path> <seq> <lifetime-secs> [option...]`.
func makeRecord(h host.Host, args []string) (madeRecord, error) {
	if len(args) < 3 {
		return madeRecord{}, errors.New("needs a value path, a sequence and a lifetime")
	}
	value, err := path.NewPath(args[0])
	if err != nil {
		return madeRecord{}, err
	}
	seq, err := strconv.ParseUint(args[1], 10, 64)
	if err != nil {
		return madeRecord{}, err
	}
	secs, err := strconv.ParseInt(args[2], 10, 64)
	if err != nil {
		return madeRecord{}, err
	}
	lifetime := time.Duration(secs) * time.Second
	sk := h.Peerstore().PrivKey(h.ID())
	eol := time.Now().Add(lifetime)
	opts := []ipns.Option{}
	badSig := false
	for _, option := range args[3:] {
		switch {
		case option == "v2only":
			opts = append(opts, ipns.WithV1Compatibility(false))
		case option == "expired":
			eol = time.Now().Add(-lifetime)
		case option == "badsig":
			badSig = true
		case strings.HasPrefix(option, "key="):
			raw, err := hex.DecodeString(strings.TrimPrefix(option, "key="))
			if err != nil {
				return madeRecord{}, err
			}
			if sk, err = crypto.UnmarshalPrivateKey(raw); err != nil {
				return madeRecord{}, err
			}
		default:
			return madeRecord{}, fmt.Errorf("unknown option %q", option)
		}
	}
	id, err := peer.IDFromPrivateKey(sk)
	if err != nil {
		return madeRecord{}, err
	}
	rec, err := ipns.NewRecord(sk, value, seq, eol, recordTTL, opts...)
	if err != nil {
		return madeRecord{}, err
	}
	encoded, err := ipns.MarshalRecord(rec)
	if err != nil {
		return madeRecord{}, err
	}
	if badSig {
		// Through the protobuf type, as the signature has no setter: the record stays
		// well-formed and only its signature is wrong.
		var entry ipnspb.IpnsRecord
		if err := proto.Unmarshal(encoded, &entry); err != nil {
			return madeRecord{}, err
		}
		entry.SignatureV2[len(entry.SignatureV2)/2] ^= 0x01
		if encoded, err = proto.Marshal(&entry); err != nil {
			return madeRecord{}, err
		}
	}
	return madeRecord{name: id, key: ipns.NameFromPeer(id).RoutingKey(), record: encoded, eol: eol}, nil
}

// resolve runs ipns-resolve: GetValue, then the stock validator on what it returned.
func resolve(ctx context.Context, kad *dht.IpfsDHT, fields []string) {
	if len(fields) < 2 {
		fail(errors.New("ipns-resolve needs a name"))
		return
	}
	name, err := ipns.NameFromString(fields[1])
	if err != nil {
		fail(err)
		return
	}
	key := string(name.RoutingKey())
	value, err := kad.GetValue(ctx, key)
	if err != nil {
		fail(err)
		return
	}
	// GetValue already validated every record it received; checking again says in so many
	// words that the stock validator accepts the one returned.
	if err := kad.Validator.Validate(key, value); err != nil {
		fail(err)
		return
	}
	rec, err := ipns.UnmarshalRecord(value)
	if err != nil {
		fail(err)
		return
	}
	if err := ipns.ValidateWithName(rec, name); err != nil {
		fail(err)
		return
	}
	target, err1 := rec.Value()
	seq, err2 := rec.Sequence()
	validity, err3 := rec.Validity()
	ttl, err4 := rec.TTL()
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		fail(err)
		return
	}
	reply(map[string]any{
		"value":         target.String(),
		"sequence":      seq,
		"validity":      validity.UTC().Format(time.RFC3339Nano),
		"validity_unix": validity.Unix(),
		"ttl_secs":      uint64(ttl / time.Second),
		"record":        hex.EncodeToString(value),
	})
}
