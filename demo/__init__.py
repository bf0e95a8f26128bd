"""The draw-a-digit demo: preprocess.py (the MNIST recipe), models.py (the trained networks),
server.py (the HTTP API) and page.html (the page). The commands are demo.py and predict.py."""
