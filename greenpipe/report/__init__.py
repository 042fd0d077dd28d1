"""Reports: the variant x device table, Pareto plot and markdown summary."""
