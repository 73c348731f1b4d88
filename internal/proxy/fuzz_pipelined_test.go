package proxy_test

import (
	"flag"
	"math/rand/v2"
	"testing"
)

// FuzzPipelinedStatements is FuzzPreparedStatements for a client that pipelines (pgx and JDBC
// batches, libpq's pipeline mode): the main client's messages are written without waiting for
// any answer, and read only at the end, where a Sync and an empty Query are added (its
// EmptyQueryResponse and ReadyForQuery come last; how many ReadyForQuery come before them is not
// known in advance, as the server skips a Query that follows an error in its batch). So a
// request uses statement names that earlier requests of the same pipeline parse or close and
// that the server has not answered yet, and simple Queries run inside batches whose Sync has not
// been sent (internal/session/settle.go).
//
// Inputs read as FuzzPreparedStatements's, but nothing waits for answers: S (Sync) and Q (Query)
// are only buffered; F (Flush) also writes what the client has so far, a write point; before O
// (the other client) the main client's pipeline ends and is read, so that what the other client
// finds through pgtide does not depend on timing.
//
// For example "P00QdB000E00S" is Parse "" as SELECT 1, the Query "SELECT 1 AS one" (which drops
// the unnamed statement), Bind and Execute of "", Sync, all in one write.
// Seeds: testdata/fuzz/FuzzPipelinedStatements. TestPipelinedStatements runs pseudo-random
// inputs without fuzzing.
func FuzzPipelinedStatements(f *testing.F) {
	fx := startFuzzProxy(f)
	f.Fuzz(func(t *testing.T, data []byte) { fx.run(t, data, true) })
}

// TestPipelinedStatements runs -pipelines pseudo-random pipelines of the seed -pipelines.seed
// through FuzzPipelinedStatements's comparison, so that the tests cover it without fuzzing (and
// a longer run with another seed searches more widely). A failure names its input: add it to the
// target's seeds to run it alone (go test -run 'FuzzPipelinedStatements/name').
func TestPipelinedStatements(t *testing.T) {
	if cluster == nil {
		t.Skip("no test cluster (-short)")
	}
	fx := newFuzzProxy(t)
	rng := rand.New(rand.NewPCG(*pipelinesSeed, 1))
	for range *pipelines {
		data := randomPipeline(rng)
		t.Run(string(data), func(t *testing.T) { fx.run(t, data, true) })
	}
}

var (
	pipelines     = flag.Int("pipelines", 200, "TestPipelinedStatements: how many pipelines")
	pipelinesSeed = flag.Uint64("pipelines.seed", 20261201, "TestPipelinedStatements: the seed of its pipelines")
)

// pipelineOps weighs the ops of randomPipeline: mostly the messages of prepared statements,
// fewer Syncs and Queries (batches of several requests), few write points, the other client
// seldom.
const pipelineOps = "PPPPPPBBBBBEEEEEDDRCCCXSSSSFQQQO"

// randomPipeline returns an input for FuzzPipelinedStatements of 4 to 24 ops, written with digits
// and letters so that it reads as a seed.
func randomPipeline(rng *rand.Rand) []byte {
	const args = "0123456789abcdefghijklmnopqrstuvwxyz"
	var data []byte
	for range 4 + rng.IntN(21) {
		op := pipelineOps[rng.IntN(len(pipelineOps))]
		data = append(data, op)
		for range fuzzOpArgs[op] {
			data = append(data, args[rng.IntN(len(args))])
		}
	}
	return data
}
