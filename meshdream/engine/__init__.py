"""Run machinery shared by the stages: the RUN folder, provenance, checkpoints, resume, the stage loop, devices."""
