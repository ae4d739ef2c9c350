"""Views of a run's result that the Interference page switches between, one module per view:
each draws one view of a `app.state.Run` (its widgets, one cached call into core/, figures from
`app.charts`)."""
