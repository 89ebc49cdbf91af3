"""Sweep points in processes of their own, started from a state that never touched CUDA (the default launcher).

    sweep's process ──fork or fresh interpreter──▶ fork server ──fork──▶ point 0, then point 1, ...

- `server.py`: the fork server. It imports only an allow-list (`warm.py`: torch, FastGPU, Hydra, W&B and the
  standard library), never the user's modules, and forks each point from that warm, clean state.
- `forks.py`: whether a process can fork a point that may still use CUDA.
- `point.py`: what runs in a point's process: Hydra's `run_job`, then its result sent back (`payload.py`).
- `ending.py`: how a point that sent nothing back ended (a signal, the OS's out-of-memory killer) as a record.
- `lifeline.py`: no orphans: each process dies with its parent, and the server reaps what a point left behind.
- `relay.py`: INT, TERM, HUP, QUIT, USR1 and USR2 to the sweep reach the running point once.
- `launcher.py`: the Hydra launcher that ties them together (`hydra_plugins/fastgpu_launcher` subclasses it).
"""
