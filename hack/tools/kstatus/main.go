// Command kstatus prints the kstatus status (sigs.k8s.io/cli-utils, the library
// Flux and kpt use to decide whether an object is healthy) of each Kubernetes
// object read as JSON from stdin, one JSON line per object:
// {"name": ..., "status": "Current|InProgress|Failed|...", "message": ...}.
// patchwarden's tests use it to check that its resources speak kstatus.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	dec := json.NewDecoder(os.Stdin)
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				return
			}
			fmt.Fprintln(os.Stderr, "kstatus: reading an object:", err)
			os.Exit(2)
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(raw); err != nil { // integers stay int64, as kstatus expects
			fmt.Fprintln(os.Stderr, "kstatus: decoding an object:", err)
			os.Exit(2)
		}
		res, err := status.Compute(u)
		if err != nil {
			fmt.Fprintln(os.Stderr, "kstatus:", u.GetName(), err)
			os.Exit(1)
		}
		line, _ := json.Marshal(map[string]string{
			"name": u.GetName(), "status": res.Status.String(), "message": res.Message,
		})
		fmt.Println(string(line))
	}
}
