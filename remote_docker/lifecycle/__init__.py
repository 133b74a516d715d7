"""A task's life: its plan, the start, follow and finish paths, and what they hand on."""
