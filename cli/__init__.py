"""What every command sets up: device, seeds, torch.distributed, threads, memory, flag checks, errors."""
