"""`Resources`: cores, memory and GPUs, as an offer has them and a job needs them.

Its own module because job specs (`covey.compute.jobs`), which every unit's process imports, need it
without pulling in the chain client.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Resources:
    """Capacity an offer has or a job needs."""

    cpu_cores: int = 1
    memory_mb: int = 1024
    gpus: int = 0

    def fits(self, needs: Resources) -> bool:
        """Whether this capacity covers `needs`."""
        return self.cpu_cores >= needs.cpu_cores and self.memory_mb >= needs.memory_mb and self.gpus >= needs.gpus
