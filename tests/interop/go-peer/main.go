// A go-libp2p-kad-dht peer for kadence's interop tests, driven by line commands on stdin with
// one JSON line per answer on stdout. It listens on 127.0.0.1 TCP only, with noise, yamux and
// identify, and runs the DHT in server mode on /ipfs/kad/1.0.0 with its stock validators.
//
// Flags, so that a test can restart the same peer in another mode:
//
//	-mode client|server   DHT mode (default server; a client does not advertise the protocol)
//	-key <hex>            the identity: a private key as crypto.MarshalPrivateKey writes it
//	                      (libp2p's protobuf encoding); a new ed25519 key when absent
//	-port <n>             TCP port on 127.0.0.1 (default 0: any free port)
//
// Commands (keys and values are hex; peers are base58 peer ids):
//
//	info                  -> {"id": ..., "addrs": [...]}
//	connect <multiaddr>   -> {"ok": true}           (the multiaddr ends in /p2p/<id>)
//	bootstrap             -> {"ok": true}           (refreshes the routing table)
//	table                 -> {"peers": [...]}
//	closest <hex key>     -> {"peers": [...]}
//	findpeer <peer id>    -> {"id": ..., "addrs": [...]}
//	provide <hex mh>      -> {"ok": true}
//	findprovs <hex mh>    -> {"providers": [{"id": ..., "addrs": [...]}]}
//	put <hex key> <hex v> -> {"ok": true}
//	get <hex key>         -> {"value": <hex>}
//	put-to <peer id> <hex key> <hex v>
//	                      -> {"ok": true}           (one PUT_VALUE to that peer, no lookup)
//	get-from <peer id> <hex key>
//	                      -> {"value": <hex> or null} (one GET_VALUE to that peer, no lookup)
//	select <hex key> <hex v>...
//	                      -> {"index": i}           (the stock validator's choice)
//	genkey <ed25519|secp256k1|ecdsa|rsa>
//	                      -> {"id": ..., "key": <hex>} (a protobuf-encoded private key)
//	ipns-record <value-path> <seq> <lifetime-secs> [option...]
//	                      -> {"name": <peer id>, "key": <hex routing key>, "record": <hex>,
//	                          "validity_unix": <EOL in seconds>}
//	ipns-publish <value-path> <seq> <lifetime-secs> [option...]
//	                      -> like ipns-record, and PutValue the record under its key
//	ipns-resolve <name>   -> {"value": ..., "sequence": n, "validity": <RFC3339>,
//	                          "validity_unix": n, "ttl_secs": n, "record": <hex>}
//	ipns-validate <hex key> <hex record>
//	                      -> {"ok": true}           (the DHT's stock validator)
//	quit
//
// ipns-record and ipns-publish sign with boxo's ipns package, by default with this peer's host
// key; their options: key=<hex> signs with that private key (from genkey), v2only leaves out
// the V1 fields, expired puts the EOL lifetime-secs in the past, badsig flips a byte of
// signatureV2. A name is a peer id. Every failure is {"error": "..."}.
package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	mh "github.com/multiformats/go-multihash"
)

type peerJSON struct {
	ID    string   `json:"id"`
	Addrs []string `json:"addrs"`
}

func reply(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		b = []byte(fmt.Sprintf(`{"error": %q}`, err.Error()))
	}
	fmt.Println(string(b))
}

func fail(err error) {
	reply(map[string]string{"error": err.Error()})
}

func main() {
	// A start-up error is the first answer, and the peer stops.
	exitOn := func(err error) {
		if err != nil {
			fail(err)
			os.Exit(1)
		}
	}
	modeFlag := flag.String("mode", "server", "DHT mode: client or server")
	keyFlag := flag.String("key", "", "hex of a marshalled private key (default: a new ed25519 key)")
	portFlag := flag.Int("port", 0, "TCP port on 127.0.0.1 (0: any)")
	flag.Parse()
	mode := dht.ModeServer
	switch *modeFlag {
	case "server":
	case "client":
		mode = dht.ModeClient
	default:
		exitOn(fmt.Errorf("-mode must be client or server, not %q", *modeFlag))
	}
	options := []libp2p.Option{
		libp2p.ListenAddrStrings(fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", *portFlag)),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
	}
	if *keyFlag != "" {
		raw, err := hex.DecodeString(*keyFlag)
		exitOn(err)
		key, err := crypto.UnmarshalPrivateKey(raw)
		exitOn(err)
		options = append(options, libp2p.Identity(key))
	}

	ctx := context.Background()
	h, err := libp2p.New(options...)
	exitOn(err)
	kad, err := dht.New(h,
		dht.Mode(mode),
		// Loopback peers only in these tests: admit and query them.
		dht.RoutingTableFilter(func(_ any, _ peer.ID) bool { return true }),
		dht.QueryFilter(func(_ any, _ peer.AddrInfo) bool { return true }),
	)
	if err != nil {
		fail(err)
		os.Exit(1)
	}

	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	for in.Scan() {
		fields := strings.Fields(in.Text())
		if len(fields) == 0 {
			continue
		}
		opCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		run(opCtx, h, kad, fields)
		cancel()
	}
}

func run(ctx context.Context, h host.Host, kad *dht.IpfsDHT, fields []string) {
	arg := func(i int) string {
		if i < len(fields) {
			return fields[i]
		}
		return ""
	}
	switch fields[0] {
	case "info":
		addrs := []string{}
		for _, a := range h.Addrs() {
			addrs = append(addrs, a.String())
		}
		reply(peerJSON{ID: h.ID().String(), Addrs: addrs})
	case "connect":
		addr, err := ma.NewMultiaddr(arg(1))
		if err != nil {
			fail(err)
			return
		}
		info, err := peer.AddrInfoFromP2pAddr(addr)
		if err != nil {
			fail(err)
			return
		}
		if err := h.Connect(ctx, *info); err != nil {
			fail(err)
			return
		}
		reply(map[string]bool{"ok": true})
	case "bootstrap":
		if err := <-kad.RefreshRoutingTable(); err != nil {
			fail(err)
			return
		}
		reply(map[string]bool{"ok": true})
	case "table":
		peers := []string{}
		for _, p := range kad.RoutingTable().ListPeers() {
			peers = append(peers, p.String())
		}
		reply(map[string][]string{"peers": peers})
	case "closest":
		key, err := hex.DecodeString(arg(1))
		if err != nil {
			fail(err)
			return
		}
		found, err := kad.GetClosestPeers(ctx, string(key))
		if err != nil {
			fail(err)
			return
		}
		peers := []string{}
		for _, p := range found {
			peers = append(peers, p.String())
		}
		reply(map[string][]string{"peers": peers})
	case "findpeer":
		id, err := peer.Decode(arg(1))
		if err != nil {
			fail(err)
			return
		}
		info, err := kad.FindPeer(ctx, id)
		if err != nil {
			fail(err)
			return
		}
		addrs := []string{}
		for _, a := range info.Addrs {
			addrs = append(addrs, a.String())
		}
		reply(peerJSON{ID: info.ID.String(), Addrs: addrs})
	case "provide", "findprovs":
		raw, err := hex.DecodeString(arg(1))
		if err != nil {
			fail(err)
			return
		}
		hash, err := mh.Cast(raw)
		if err != nil {
			fail(err)
			return
		}
		c := cid.NewCidV1(cid.Raw, hash)
		if fields[0] == "provide" {
			if err := kad.Provide(ctx, c, true); err != nil {
				fail(err)
				return
			}
			reply(map[string]bool{"ok": true})
			return
		}
		out := []peerJSON{}
		for info := range kad.FindProvidersAsync(ctx, c, 0) {
			addrs := []string{}
			for _, a := range info.Addrs {
				addrs = append(addrs, a.String())
			}
			out = append(out, peerJSON{ID: info.ID.String(), Addrs: addrs})
		}
		reply(map[string][]peerJSON{"providers": out})
	case "put":
		key, err1 := hex.DecodeString(arg(1))
		value, err2 := hex.DecodeString(arg(2))
		if err1 != nil || err2 != nil {
			fail(fmt.Errorf("bad hex"))
			return
		}
		if err := kad.PutValue(ctx, string(key), value); err != nil {
			fail(err)
			return
		}
		reply(map[string]bool{"ok": true})
	case "get":
		key, err := hex.DecodeString(arg(1))
		if err != nil {
			fail(err)
			return
		}
		value, err := kad.GetValue(ctx, string(key))
		if err != nil {
			fail(err)
			return
		}
		reply(map[string]string{"value": hex.EncodeToString(value)})
	case "put-to", "get-from":
		ipnsDirect(ctx, h, fields)
	case "select", "genkey", "ipns-record", "ipns-publish", "ipns-resolve", "ipns-validate":
		ipnsCommand(ctx, h, kad, fields)
	case "quit":
		os.Exit(0)
	default:
		fail(fmt.Errorf("unknown command %q", fields[0]))
	}
}
