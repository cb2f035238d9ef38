"""What a search found, for people: the Pareto front and verdict, plots, MLflow records."""
