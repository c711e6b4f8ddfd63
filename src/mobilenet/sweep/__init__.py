"""The width α and input size ρ chosen for a device: one run per point (run), its worker
processes (jobs). The one area that combines training, the report and deployment."""
