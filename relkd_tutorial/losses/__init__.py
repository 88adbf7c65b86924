"""One module per method; each holds pure loss functions plus a thin ``nn.Module`` where needed."""
