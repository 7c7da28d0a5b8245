"""Dataset loaders behind `ssm_lab.data`: shared container and helpers, MNIST, CIFAR-10, image folders."""
