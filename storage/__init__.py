"""Files written whole or not at all, run folders never overwritten by accident, checkpoint files."""
