"""lsgtrain: fine-tune LSG-Pegasus on long documents."""
