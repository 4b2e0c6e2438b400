package main

// Reconstructed locally: validation/default/default.go is not stored; this is the stored
// validation/default.go (36cf932) adapted to the util API of the other files (GetDefaultGenerator
// returns an error, RuntimeInsideValidate takes a TAP harness and a PreFunc).

import (
	"github.com/opencontainers/runtime-tools/validation/util"
)

func main() {
	g, err := util.GetDefaultGenerator()
	if err != nil {
		util.Fatal(err)
	}
	err = util.RuntimeInsideValidate(g, nil, nil)
	if err != nil {
		util.Fatal(err)
	}
}
