// tlsverify dials a TLS server the way the kube-apiserver dials a webhook:
// Go's crypto/tls and crypto/x509, trusting only the given CA bundle (the
// caBundle), with the given server name as SNI and verification name.
//
// Usage: go run tlsverify.go -ca ca.crt -addr 127.0.0.1:9443 -name keyhook.keyhook.svc
// Exit 0 and "verified <subject>" when the handshake verifies; exit 1 and the
// error (the same text the apiserver logs) otherwise.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"os"
)

func main() {
	caFile := flag.String("ca", "", "PEM CA bundle to trust")
	addr := flag.String("addr", "", "host:port to dial")
	name := flag.String("name", "", "server name to verify")
	flag.Parse()

	pem, err := os.ReadFile(*caFile)
	if err != nil {
		fmt.Println(err)
		os.Exit(2)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		fmt.Println("no certificates in", *caFile)
		os.Exit(2)
	}
	conn, err := tls.Dial("tcp", *addr, &tls.Config{
		RootCAs:    roots,
		ServerName: *name,
		NextProtos: []string{"h2", "http/1.1"},
		MinVersion: tls.VersionTLS12,
	})
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	defer conn.Close()
	state := conn.ConnectionState()
	fmt.Printf("verified %s alpn=%s\n", state.PeerCertificates[0].Subject, state.NegotiatedProtocol)
}
