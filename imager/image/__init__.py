"""Images: the sinks the reader pipeline feeds and the readers restore/verify/export consume."""
