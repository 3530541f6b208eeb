"""Where tokenising and the predictor processes run: the one seam for how
work is spread.

One contract (contract.py: `Machines` gives the run's tokenizer, a
`ChunkEncoder`, plans one EngineOptions per predictor process and opens
`RunnerPool`s on them; a pool maps jobs to results in job order), chosen in
one place from the options (choice.py), and one file per way of running
behind it:

- local.py: processes of this host (ShardedEncoder's tokenizer processes;
  WorkerPool, spawned, retried from the first unfinished job);
- ray_cluster.py: a Ray cluster (`--ray`): tokenising as a Ray Data
  operator (ray_data_tokenize.py), and one actor per predictor process,
  restarted and its jobs retried by Ray.

Every way of running builds its runners through contract.make_runner, which
also sets the process's host memory policy (host_memory.py: freed memory
kept for the next job).

The device is the engine's business (predictor/engines/), never this
room's: no file here exists per device.
"""
