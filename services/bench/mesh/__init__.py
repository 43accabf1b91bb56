"""``livecalc bench mesh``: the mesh as real processes against the in-process pipeline.

One run starts a data service over a scratch directory, three engines (K threads each) and
one gateway per engine count (1, 2, 3; gateway *n* dispatches to the first *n* engines),
each ``livecalc serve`` as its own process on free loopback ports. Per model (``--model``:
term_life, the default, savings or both) it generates the datasets (``services.data.generate``,
seed 1), builds the reference package (term_life: esg → term_life with dynamic lapse on, β = 25,
as the functional tests; savings: normals → savings, lifelib CashValue_ME) and uploads it to
every gateway, then measures on the same policies and scenarios (the package's configured
scenario set, with the bench's count):

- the in-process pipeline (`PipelineRunner` on a `WasmPool` of the same K threads): read
  the Parquet file, validate the policies, run the package's pipeline;
- one engine alone: one RunChunk of every block, straight to engine 0 (no gateway), whose
  ChunkSummary says how long the engine read rows and computed;
- the mesh with 1, 2 and 3 engines: SubmitJob to the result event, as a client sees it.

Every configuration first runs one untimed warm-up (package download, module compile,
dataset metadata), then ``repeats`` timed runs; the figure is their **median**. Peak RSS
(``VmHWM``) of every service is read after each dataset size (services.common.rss). Every result hash
(in-process, every mesh job, warm-ups included) must be the same.

It lives in services.bench, outside the service packages, because it drives them all and runs
the engine's pipeline in process: a service never imports another service's modules
(docs/architecture.md "Layering"). Benchmarks are not tests: this prints numbers.

The modules: `config` (what to measure, from the command line), `inputs` (datasets, packages,
scenarios), `runs` (one timed run each: in process, engine alone, a mesh job), `measure` (the
services started, every configuration measured), `report` (the JSON document and its text),
`command` (``livecalc bench mesh``).
"""
