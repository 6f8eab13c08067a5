"""Data loading, model definitions, train / evaluate / experiment / retrain jobs, reports and plots."""
