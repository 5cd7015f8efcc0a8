package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/flowsensor/flowsensor/bpf"
	"github.com/flowsensor/flowsensor/internal/lab"
	"github.com/flowsensor/flowsensor/loader"
	"github.com/flowsensor/flowsensor/sinks/parquet"
)

const (
	clientIP = "10.199.0.1"
	serverIP = "10.199.0.2"
	udpPort  = 9999
	tcpPort  = 8080

	udpDatagrams = 1000
	udpPayload   = 100
	pings        = 20
	tcpExchanges = 10
)

// labNet is a client and a server joined by a veth link, and a sensor
// namespace whose interface receives a copy of every frame the client's end
// of the link sends or receives (tc mirred), as from a switch's mirror port.
type labNet struct {
	client, server, sensor *lab.Netns
	sensorIf               string
}

func newLabNet(t *testing.T) *labNet {
	t.Helper()
	id := lab.Unique("fs")
	n := &labNet{
		client:   lab.NewNetns(t, id+"-client"),
		server:   lab.NewNetns(t, id+"-server"),
		sensor:   lab.NewNetns(t, id+"-sensor"),
		sensorIf: id + "mon", // unique: it names the pin directory too
	}
	lab.Veth(t, n.client, "c0", n.server, "s0")
	lab.Veth(t, n.client, "m0", n.sensor, n.sensorIf)
	n.client.Run(t, "ip", "addr", "add", clientIP+"/24", "dev", "c0")
	n.server.Run(t, "ip", "addr", "add", serverIP+"/24", "dev", "s0")
	lab.Mirror(t, n.client, "c0", "m0")
	return n
}

// TestLab runs the sensor in the lab in each XDP mode while a known load
// crosses the link, then checks the Parquet rows against the kernel's own
// per-namespace counters.
func TestLab(t *testing.T) {
	lab.RequirePrivileged(t)
	for _, mode := range []string{"generic", "native"} {
		t.Run(mode, func(t *testing.T) { testLabMode(t, mode) })
	}
}

func testLabMode(t *testing.T, mode string) {
	n := newLabNet(t)
	out := t.TempDir()
	args := []string{"run", "-i", n.sensorIf, "--out", out, "--xdp-mode", mode, "--status-interval", "1s"}
	// The live path into Elasticsearch too (replay's is in es_test.go), where there is one.
	esPrefix := ""
	if url := os.Getenv("FLOWSENSOR_ES_URL"); url != "" && mode == "native" {
		esPrefix = fmt.Sprintf("fs-test-lab-%d", time.Now().UnixNano())
		args = append(args, "--es-url", proxyInto(t, n.sensor, url), "--es-index-prefix", esPrefix)
		t.Cleanup(func() { esDelete(url, esPrefix) })
	}
	s := startFlowsensor(t, n.sensor.Path(), args...)
	s.waitFor(t, "watching "+n.sensorIf, 15*time.Second)
	if !strings.Contains(s.stderr(), "xdp "+mode) {
		t.Fatalf("not attached in %s mode: %s", mode, s.stderr())
	}

	// While it runs: the program is attached and bpftool sees it and the pins.
	pinDir := filepath.Join(loader.DefaultPinRoot, n.sensorIf)
	if got := xdpAttached(t, n.sensor, n.sensorIf); !got {
		t.Fatal("no XDP program attached while the sensor runs")
	}
	if out := lab.Run(t, "bpftool", "prog", "show", "name", "flowsensor_xdp"); !strings.Contains(out, "xdp") {
		t.Fatalf("bpftool prog show: %s", out)
	}
	if out := lab.Run(t, "bpftool", "map", "dump", "pinned", filepath.Join(pinDir, "fs_counters")); !strings.Contains(out, "value") {
		t.Fatalf("bpftool map dump of the pinned counters: %s", out)
	}

	clientBefore, serverBefore := snmp(t, n.client), snmp(t, n.server)
	sendUDP(t, n)
	n.client.Run(t, "ping", "-q", "-c", strconv.Itoa(pings), "-i", "0.02", serverIP)
	clientPort := tcpExchange(t, n)
	time.Sleep(300 * time.Millisecond) // the last ACKs, through the mirror
	clientAfter, serverAfter := snmp(t, n.client), snmp(t, n.server)
	if d := clientAfter["Udp OutDatagrams"] - clientBefore["Udp OutDatagrams"]; d != udpDatagrams {
		t.Fatalf("client sent %d UDP datagrams, want %d", d, udpDatagrams)
	}
	clientSegs := clientAfter["Tcp OutSegs"] - clientBefore["Tcp OutSegs"]
	serverSegs := serverAfter["Tcp OutSegs"] - serverBefore["Tcp OutSegs"]

	s.stop(t)

	// Nothing stays attached or pinned.
	if xdpAttached(t, n.sensor, n.sensorIf) {
		t.Error("XDP program still attached after exit")
	}
	if _, err := os.Stat(pinDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin directory %s still exists after exit (%v)", pinDir, err)
	}

	flows := sumFlows(readRows(t, out))
	udp := flows[flowKey{17, clientIP, 40001, serverIP, udpPort}]
	wantUDPBytes := int64(udpDatagrams * (14 + 20 + 8 + udpPayload))
	if udp.SrcPackets != udpDatagrams || udp.DstPackets != 0 || udp.SrcBytes != wantUDPBytes || !udp.Final {
		t.Errorf("udp flow: %+v, want %d packets, %d bytes from the client, none back, final", udp, udpDatagrams, wantUDPBytes)
	}
	icmp := flows[flowKey{1, clientIP, 8, serverIP, 0}]
	if icmp.SrcPackets != pings || icmp.DstPackets != pings {
		t.Errorf("icmp flow: %+v, want %d echo requests and %d replies", icmp, pings, pings)
	}
	tcp := flows[flowKey{6, clientIP, clientPort, serverIP, tcpPort}]
	if tcp.SrcPackets != clientSegs || tcp.DstPackets != serverSegs {
		t.Errorf("tcp flow: %d/%d packets, want %d/%d (the namespaces' Tcp OutSegs)", tcp.SrcPackets, tcp.DstPackets, clientSegs, serverSegs)
	}
	want := int32(bpf.TCPSyn | bpf.TCPAck | bpf.TCPPsh | bpf.TCPFin)
	if tcp.SrcTCPFlags != want || tcp.DstTCPFlags != want {
		t.Errorf("tcp flags %#x/%#x, want %#x both ways", tcp.SrcTCPFlags, tcp.DstTCPFlags, want)
	}
	for k, f := range flows {
		if f.Interface != n.sensorIf {
			t.Errorf("flow %v: interface %q, want %q", k, f.Interface, n.sensorIf)
		}
	}
	checkDuckDB(t, out)
	if esPrefix != "" {
		url := os.Getenv("FLOWSENSOR_ES_URL")
		esDo(t, "POST", url+"/"+esPrefix+"-*/_refresh", nil)
		rows := readRows(t, out)
		if got := esDo(t, "GET", url+"/"+esPrefix+"-*/_count", nil)["count"].(float64); int(got) != len(rows) {
			t.Errorf("%d documents in Elasticsearch, %d rows in Parquet", int(got), len(rows))
		}
	}
	if t.Failed() {
		t.Logf("flows: %+v\nstderr:\n%s", flows, s.stderr())
	}
}

// flowKey identifies a flow in the test by its first packet's direction.
type flowKey struct {
	proto   int32
	src     string
	srcPort int32
	dst     string
	dstPort int32
}

// sumFlows adds up every report of each flow (non-final reports carry deltas).
func sumFlows(rows []parquet.Row) map[flowKey]parquet.Row {
	m := map[flowKey]parquet.Row{}
	for _, r := range rows {
		k := flowKey{r.Protocol, r.SrcIP, r.SrcPort, r.DstIP, r.DstPort}
		s := m[k]
		s.SrcPackets += r.SrcPackets
		s.DstPackets += r.DstPackets
		s.SrcBytes += r.SrcBytes
		s.DstBytes += r.DstBytes
		s.SrcTCPFlags |= r.SrcTCPFlags
		s.DstTCPFlags |= r.DstTCPFlags
		s.Final = s.Final || r.Final
		s.Interface = r.Interface
		m[k] = s
	}
	return m
}

func xdpAttached(t *testing.T, ns *lab.Netns, ifname string) bool {
	t.Helper()
	h, err := netns.GetFromName(ns.Name)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	l, err := nl.LinkByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().Xdp != nil && l.Attrs().Xdp.Attached
}

// sendUDP sends udpDatagrams datagrams from the client to a server socket
// that receives them all, so no ICMP errors come back.
func sendUDP(t *testing.T, n *labNet) {
	t.Helper()
	var srv *net.UDPConn
	n.server.Do(t, func() {
		var err error
		srv, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(serverIP), Port: udpPort})
		if err != nil {
			t.Fatal(err)
		}
	})
	defer srv.Close()
	var cli *net.UDPConn
	n.client.Do(t, func() {
		var err error
		cli, err = net.DialUDP("udp4", &net.UDPAddr{IP: net.ParseIP(clientIP), Port: 40001}, &net.UDPAddr{IP: net.ParseIP(serverIP), Port: udpPort})
		if err != nil {
			t.Fatal(err)
		}
	})
	defer cli.Close()
	got := make(chan int)
	go func() {
		buf := make([]byte, 2048)
		count := 0
		_ = srv.SetReadDeadline(time.Now().Add(20 * time.Second))
		for count < udpDatagrams {
			if _, err := srv.Read(buf); err != nil {
				break
			}
			count++
		}
		got <- count
	}()
	payload := make([]byte, udpPayload)
	for i := 0; i < udpDatagrams; i++ {
		if _, err := cli.Write(payload); err != nil {
			t.Fatal(err)
		}
		if i%50 == 49 {
			// Stay far below the per-CPU backlog (netdev_max_backlog) the
			// mirrored copies also queue in.
			time.Sleep(2 * time.Millisecond)
		}
	}
	if c := <-got; c != udpDatagrams {
		t.Fatalf("server received %d of %d datagrams", c, udpDatagrams)
	}
}

// tcpExchange opens one TCP connection, exchanges tcpExchanges small
// request/response pairs (one segment each: no segmentation offload merges
// them) and closes it from the client. It returns the client port.
func tcpExchange(t *testing.T, n *labNet) int32 {
	t.Helper()
	var ln net.Listener
	n.server.Do(t, func() {
		var err error
		ln, err = net.Listen("tcp4", net.JoinHostPort(serverIP, strconv.Itoa(tcpPort)))
		if err != nil {
			t.Fatal(err)
		}
	})
	defer ln.Close()
	served := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			served <- err
			return
		}
		defer c.Close()
		_, err = io.Copy(c, c) // echo until the client's FIN
		served <- err
	}()
	var conn net.Conn
	n.client.Do(t, func() {
		var err error
		conn, err = net.Dial("tcp4", net.JoinHostPort(serverIP, strconv.Itoa(tcpPort)))
		if err != nil {
			t.Fatal(err)
		}
	})
	req, resp := make([]byte, 100), make([]byte, 100)
	for i := 0; i < tcpExchanges; i++ {
		if _, err := conn.Write(req); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(conn, resp); err != nil {
			t.Fatal(err)
		}
	}
	port := int32(conn.LocalAddr().(*net.TCPAddr).Port)
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	// The server closed after echoing; wait for its FIN, then close.
	if _, err := io.ReadAll(conn); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	return port
}

// snmp reads the namespace's /proc/net/snmp as "Proto Field" -> value.
func snmp(t *testing.T, ns *lab.Netns) map[string]int64 {
	t.Helper()
	out := ns.Run(t, "cat", "/proc/net/snmp")
	m := map[string]int64{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		names := strings.Fields(sc.Text())
		if !sc.Scan() {
			break
		}
		values := strings.Fields(sc.Text())
		for i := 1; i < len(names) && i < len(values); i++ {
			v, _ := strconv.ParseInt(values[i], 10, 64)
			m[strings.TrimSuffix(names[0], ":")+" "+names[i]] = v
		}
	}
	return m
}

// checkDuckDB reads the output with DuckDB, an independent Parquet reader.
func checkDuckDB(t *testing.T, out string) {
	t.Helper()
	if exec.Command("python3", "-c", "import duckdb").Run() != nil {
		if os.Getenv(lab.RequireEnv) != "" {
			t.Fatal("DuckDB (python3 -m pip install duckdb) is required when " + lab.RequireEnv + " is set")
		}
		t.Log("DuckDB python module not installed: skipping the DuckDB read")
		return
	}
	query := fmt.Sprintf(`import duckdb
print(duckdb.sql("select sum(src_packets) from read_parquet('%s/flows/**/*.parquet', hive_partitioning=true) where protocol = 17 and dst_port = %d").fetchall()[0][0])`, out, udpPort)
	got, err := exec.Command("python3", "-c", query).CombinedOutput()
	if err != nil {
		t.Fatalf("duckdb: %v\n%s", err, got)
	}
	if strings.TrimSpace(string(got)) != strconv.Itoa(udpDatagrams) {
		t.Errorf("duckdb sum(src_packets) of the UDP flow = %s, want %d", got, udpDatagrams)
	}
}

// TestLabInterfaceComesBack deletes the watched interface while the sensor
// runs, creates it again, and checks that the sensor attached again and
// counted the traffic that crossed the new interface.
func TestLabInterfaceComesBack(t *testing.T) {
	lab.RequirePrivileged(t)
	n := newLabNet(t)
	out := t.TempDir()
	s := startFlowsensor(t, n.sensor.Path(), "run", "-i", n.sensorIf, "--out", out, "--xdp-mode", "native")
	s.waitFor(t, "watching "+n.sensorIf, 15*time.Second)

	// Deleting one end of a veth pair deletes both.
	n.client.Run(t, "ip", "link", "del", "m0")
	s.waitFor(t, n.sensorIf+" went away", 10*time.Second)
	lab.Veth(t, n.client, "m0", n.sensor, n.sensorIf)
	n.client.Run(t, "tc", "qdisc", "del", "dev", "c0", "clsact")
	lab.Mirror(t, n.client, "c0", "m0")
	deadline := time.Now().Add(15 * time.Second)
	for strings.Count(s.stderr(), "watching "+n.sensorIf) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("not attached again:\n%s", s.stderr())
		}
		time.Sleep(20 * time.Millisecond)
	}
	n.client.Run(t, "ping", "-q", "-c", "5", "-i", "0.02", serverIP)
	time.Sleep(200 * time.Millisecond)
	s.stop(t)

	if xdpAttached(t, n.sensor, n.sensorIf) {
		t.Error("XDP program still attached after exit")
	}
	icmp := sumFlows(readRows(t, out))[flowKey{1, clientIP, 8, serverIP, 0}]
	if icmp.SrcPackets != 5 || icmp.DstPackets != 5 {
		t.Errorf("icmp flow after the interface came back: %+v, want 5 requests and 5 replies\n%s", icmp, s.stderr())
	}
}

// proxyInto makes the HTTP service at url (in the test's own namespace)
// reachable from inside ns, whose loopback is its own, and returns the URL
// to use there.
func proxyInto(t *testing.T, ns *lab.Netns, url string) string {
	t.Helper()
	target := strings.TrimPrefix(strings.TrimPrefix(url, "http://"), "https://")
	var ln net.Listener
	ns.Do(t, func() {
		var err error
		if ln, err = net.Listen("tcp4", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	})
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer in.Close()
				out, err := net.Dial("tcp", target) // from this goroutine: the test's namespace
				if err != nil {
					return
				}
				defer out.Close()
				go func() { _, _ = io.Copy(out, in) }()
				_, _ = io.Copy(in, out)
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}
