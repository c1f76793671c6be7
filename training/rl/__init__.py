"""The learned (RL) router: training config and loop (stable-baselines3), the harness adapter and
the self-contained serving module. Heavy (torch, sb3) modules are imported only by ``train``.
"""
