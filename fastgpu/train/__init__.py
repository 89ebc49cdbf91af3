"""The training loop and what it needs: step, optimizer, precision, parallel wrapping, checkpoints."""
