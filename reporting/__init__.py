"""What an evaluation hands back: the results JSON, printed tables and pictures of the features."""
