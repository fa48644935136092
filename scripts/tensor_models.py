"""Makes the tensor models of scripts/make-tensor-models: trains them with
numpy and scikit-learn, writes them as ONNX, and writes reference outputs
(numpy's, on fixed inputs) beside them. Fails loudly if a model is not good
enough to be worth testing against (accuracy, or a pole that falls).

    python tensor_models.py OUT_DIR
"""

import json
import pathlib
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits
from sklearn.neural_network import MLPClassifier

OPSET = 13
IR_VERSION = 8

# The cart-pole: the same constants as the host's simulator (runtime world
# `cartpole`): cart and pole masses (kg), pole half-length (m), gravity.
CART_MASS = 1.0
POLE_MASS = 0.1
HALF_LENGTH = 0.5
GRAVITY = 9.81
DT = 0.01
MAX_FORCE = 20.0


def save(model: onnx.ModelProto, path: pathlib.Path) -> None:
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def tensor(name, array):
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def reference(path: pathlib.Path, inputs: dict, outputs: dict, **extra) -> None:
    def encode(arrays):
        return {
            name: {"shape": list(a.shape), "data": [float(x) for x in a.astype(np.float32).ravel()]}
            for name, a in arrays.items()
        }

    path.write_text(json.dumps({"inputs": encode(inputs), "outputs": encode(outputs), **extra}))


def digits(out: pathlib.Path) -> None:
    data = load_digits()
    x = data.data.astype(np.float32)
    y = data.target
    train, test = slice(0, 1500), slice(1500, None)
    clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=600, random_state=0)
    clf.fit(x[train] / 16.0, y[train])
    w1, w2 = clf.coefs_
    b1, b2 = clf.intercepts_

    def forward(pixels):
        hidden = np.maximum(pixels / 16.0 @ w1 + b1, 0.0)
        logits = hidden @ w2 + b2
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)

    accuracy = float((forward(x[test]).argmax(axis=1) == y[test]).mean())
    assert accuracy > 0.9, f"digits accuracy {accuracy}"
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["pixels", "scale"], ["scaled"]),
            helper.make_node("MatMul", ["scaled", "w1"], ["h1"]),
            helper.make_node("Add", ["h1", "b1"], ["h1b"]),
            helper.make_node("Relu", ["h1b"], ["hidden"]),
            helper.make_node("MatMul", ["hidden", "w2"], ["h2"]),
            helper.make_node("Add", ["h2", "b2"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "digits",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])],
        [tensor("scale", [1.0 / 16.0]), tensor("w1", w1), tensor("b1", b1), tensor("w2", w2), tensor("b2", b2)],
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), out / "digits.onnx")
    sample = x[1500:1516]
    reference(
        out / "digits.reference.json",
        {"pixels": sample},
        {"probabilities": forward(sample)},
        labels=[int(v) for v in y[1500:1516]],
        test_pixels=[[float(p) for p in row] for row in x[test]],
        test_labels=[int(v) for v in y[test]],
        accuracy=accuracy,
    )
    print(f"digits.onnx: held-out accuracy {accuracy:.3f}")


def cartpole_step(state, force):
    """One Euler step of the cart-pole (a uniform rod on a cart)."""
    x, x_dot, theta, theta_dot = state
    total = CART_MASS + POLE_MASS
    sin, cos = np.sin(theta), np.cos(theta)
    temp = (force + POLE_MASS * HALF_LENGTH * theta_dot**2 * sin) / total
    theta_acc = (GRAVITY * sin - cos * temp) / (HALF_LENGTH * (4.0 / 3.0 - POLE_MASS * cos**2 / total))
    x_acc = temp - POLE_MASS * HALF_LENGTH * theta_acc * cos / total
    return np.array([x + DT * x_dot, x_dot + DT * x_acc, theta + DT * theta_dot, theta_dot + DT * theta_acc])


def lqr_gain():
    total = CART_MASS + POLE_MASS
    a = HALF_LENGTH * (4.0 / 3.0 - POLE_MASS / total)
    cont_a = np.array(
        [
            [0, 1, 0, 0],
            [0, 0, -POLE_MASS * HALF_LENGTH * GRAVITY / (total * a), 0],
            [0, 0, 0, 1],
            [0, 0, GRAVITY / a, 0],
        ]
    )
    cont_b = np.array([[0], [(1 + POLE_MASS * HALF_LENGTH / (total * a)) / total], [0], [-1 / (total * a)]])
    ad = np.eye(4) + DT * cont_a
    bd = DT * cont_b
    q = np.diag([1.0, 1.0, 10.0, 1.0])
    r = np.array([[0.1]])
    p = q.copy()
    for _ in range(5000):
        k = np.linalg.solve(r + bd.T @ p @ bd, bd.T @ p @ ad)
        p = q + ad.T @ p @ (ad - bd @ k)
    return k[0]


def cartpole_policy(out: pathlib.Path) -> None:
    k = lqr_gain()
    rng = np.random.default_rng(0)
    bounds = np.array([2.0, 2.0, 0.3, 2.0])
    states = rng.uniform(-bounds, bounds, size=(20000, 4))
    targets = np.clip(-(states @ k), -MAX_FORCE, MAX_FORCE)[:, None] / MAX_FORCE
    hidden = 32
    w1 = rng.normal(0, 0.5, (4, hidden))
    b1 = np.zeros(hidden)
    w2 = rng.normal(0, 0.1, (hidden, 1))
    b2 = np.zeros(1)
    params = [w1, b1, w2, b2]
    moments = [(np.zeros_like(p), np.zeros_like(p)) for p in params]
    for step in range(1, 6001):
        batch = rng.integers(0, len(states), 256)
        s, t = states[batch] / bounds, targets[batch]
        h = np.tanh(s @ w1 + b1)
        y = h @ w2 + b2
        grad_y = 2 * (y - t) / len(batch)
        grad_w2 = h.T @ grad_y
        grad_b2 = grad_y.sum(0)
        grad_h = grad_y @ w2.T * (1 - h**2)
        grads = [s.T @ grad_h, grad_h.sum(0), grad_w2, grad_b2]
        for i, (p, g) in enumerate(zip(params, grads)):
            m, v = moments[i]
            m[...] = 0.9 * m + 0.1 * g
            v[...] = 0.999 * v + 0.001 * g * g
            p -= 3e-3 * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)

    def policy(observations):
        h = np.tanh((observations / bounds) @ w1 + b1)
        return (MAX_FORCE * (h @ w2 + b2)).astype(np.float32)

    # The policy must balance the pole for 10 s from a tilt, as the tests ask.
    state = np.array([0.0, 0.0, 0.15, 0.0])
    worst = 0.0
    for _ in range(int(10 / DT)):
        force = float(np.clip(policy(state[None, :])[0, 0], -MAX_FORCE, MAX_FORCE))
        state = cartpole_step(state, force)
        worst = max(worst, abs(state[2]))
    assert worst < 0.2 and abs(state[0]) < 1.0, f"the policy lets the pole fall: {state}, {worst}"

    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["observation", "inverse_bounds"], ["scaled"]),
            helper.make_node("MatMul", ["scaled", "w1"], ["h1"]),
            helper.make_node("Add", ["h1", "b1"], ["h1b"]),
            helper.make_node("Tanh", ["h1b"], ["hidden"]),
            helper.make_node("MatMul", ["hidden", "w2"], ["h2"]),
            helper.make_node("Add", ["h2", "b2"], ["unit_force"]),
            helper.make_node("Mul", ["unit_force", "max_force"], ["force"]),
        ],
        "cartpole_policy",
        [helper.make_tensor_value_info("observation", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("force", TensorProto.FLOAT, ["batch", 1])],
        [
            tensor("inverse_bounds", 1.0 / bounds),
            tensor("w1", w1),
            tensor("b1", b1),
            tensor("w2", w2),
            tensor("b2", b2),
            tensor("max_force", [MAX_FORCE]),
        ],
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), out / "cartpole-policy.onnx")
    sample = rng.uniform(-bounds, bounds, size=(8, 4)).astype(np.float32)
    reference(
        out / "cartpole-policy.reference.json",
        {"observation": sample},
        {"force": policy(sample.astype(np.float64))},
        lqr_gain=[float(v) for v in k],
    )
    print(f"cartpole-policy.onnx: balances 10 s, worst angle {worst:.3f} rad")


if __name__ == "__main__":
    target = pathlib.Path(sys.argv[1])
    digits(target)
    cartpole_policy(target)
