"""A run of fedmic, cut by job. setup: what every party builds from the run config (device,
data, algorithm); clients: the seam between the round loop and the clients, and the clients of
a run in this process; loop: the rounds; evaluation, checkpoint, record: scoring, resuming, and
what a run writes. fedmic.engine.Simulation composes them for `fedmic train`;
fedmic/flower/server_app.py composes the same loop with clients at Flower sites."""
