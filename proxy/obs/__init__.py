"""What happened and what it cost: metrics, accounting, prices, health, logging helpers."""
