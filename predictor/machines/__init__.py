"""Where the predictor processes run: the one seam for how work is spread.

One contract (contract.py: `Machines` plans one EngineOptions per predictor
process and opens `RunnerPool`s on them; a pool maps jobs to results in job
order), chosen in one place from the options (choice.py), and one file per
way of running behind it:

- local.py: processes of this host (WorkerPool, spawned, retried from the
  first unfinished job);
- ray_cluster.py: actors of a Ray cluster (`--ray`), one per predictor
  process, restarted and their jobs retried by Ray.

The device is the engine's business (predictor/engines/), never this
room's: no file here exists per device.
"""
