"""Job running: the arq WorkerSettings (production, Redis) and the embedded runner
(one process, no Redis), both executing the same due-work functions."""
