# Hu et al. 2018: residual WGAN-GP generator / critic (128 channels, 32x32 crops) and an
# InfoGAN auxiliary network Q (its own residual trunk); z: 32 Gaussian, c: 5 categories.
model = dict(
    type='CellInfoWGAN',
    z_dim=32,
    num_categories=5,
    channels=128,
    img_size=32,
    n_critic=5,     # five critic iterations per generator (and Q) iteration
    lambda1=10.0,   # gradient penalty, eq. (10)
    lambda2=1.0,    # Q loss, eq. (12)
    data_preprocessor=dict(type='ImgDataPreprocessor', mean=[127.5] * 3, std=[127.5] * 3,
                           bgr_to_rgb=True))  # loaded BGR -> RGB in [-1, 1]
