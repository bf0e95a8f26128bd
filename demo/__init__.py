"""The draw-a-digit demo: models.py (the trained networks), server.py (the HTTP API), training.py
and live.py (the page's live runs) and page.html (the page); the MNIST recipe that makes a drawing
a 28x28 image is mnist_style.py, beside data_loader.py. The commands are demo.py and predict.py."""
