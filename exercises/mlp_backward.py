"""Exercise: the MLP's backward pass.

Goal: from dLoss/dlogits, fill in every weight's and bias's gradient, layer by layer.

    python check.py --exercise mlp_backward            # grades this file against PyTorch's autograd
    python numpy_nn/train.py --exercise mlp_backward   # trains the MLP with your backward, once it passes

Hints:
- The forward pass of layer i is z = h_prev @ W + b (h_prev: B,fan_in; W: fan_in,fan_out), then
  h = f(z). Write one entry, z_nj = sum_i h_ni W_ij + b_j, and differentiate it by W_ij: the
  sum over the rows n is a matrix product (docs/backprop.md#from-one-weight-to-the-matrix).
  Each gradient has the shape of the thing it belongs to: dW like W, db like b.
- A bias is added to every row of the batch, so its gradient sums over the rows (same section).
- Going back through h_prev @ W gives dh_prev; going back through the activation multiplies
  by f'(z) elementwise, which self.f_grad reads off the activation's output a = f(z)
  (docs/backprop.md#activations).
- Write each blank as a new array (no `*=`): the checker reads dz, dW, db and dh by name.

Solution: the project's own, ../numpy_nn/neural_network.py, NeuralNetwork.backward.
"""


def backward(self, dlogits, cache, l2=0.0):
    """Fill self.grads with dLoss/dW and dLoss/db of every layer; return self.grads.
    (self is the NeuralNetwork; cache is what its forward() kept: h0, h1, ..., a1, a2, ...)"""
    L = self.num_layers
    dz = dlogits                                  # B,10  dLoss/dlogits: where the chain rule starts
    for i in range(L, 0, -1):                     # layers L, ..., 1: the forward pass in reverse
        h_prev, W = cache[f"h{i - 1}"], self.params[f"W{i}"]   # B,fan_in ; fan_in,fan_out
        dW = ...  # TODO  fan_in,fan_out  z = h_prev W + b  =>  dW = ?
        db = ...  # TODO  fan_out  b was added to every row of the batch
        if l2:
            dW = dW + l2 * W                      # the L2 penalty's gradient: d(l2/2 * W^2)/dW
        self.grads[f"W{i}"][...] = dW             # written into the network's gradient buffer
        self.grads[f"b{i}"][...] = db
        if i == 1:
            break                                 # the input needs no gradient
        dh = ...  # TODO  B,fan_in  dLoss/dh_prev, back through h_prev W
        if f"mask{i - 1}" in cache:
            dh = dh * cache[f"mask{i - 1}"]       # dropout: blocked units pass no gradient
        dz = ...  # TODO  B,fan_in  back through the activation: self.f_grad(cache[f"a{i - 1}"]) is f'(z)
    return self.grads
