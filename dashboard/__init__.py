"""The Dash map dashboard (command-centre wall, hotspots, villages, cases, planner)."""
